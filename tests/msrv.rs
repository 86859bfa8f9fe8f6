//! The stated minimum Rust version is the real one: the highest
//! `rust-version` of the crates `Cargo.lock` pins. Only one toolchain may be
//! installed, so building with the minimum cannot check it; the lockfile can.
//! Read from the cargo registry's source cache; a crate not found there (one
//! only another platform needs) is skipped.

use std::path::{Path, PathBuf};

/// A `rust-version`: major, minor, patch (a missing patch is 0).
type Version = (u32, u32, u32);

fn parse_version(text: &str) -> Version {
    let mut parts = text.split('.').map(|p| {
        p.parse::<u32>()
            .unwrap_or_else(|_| panic!("bad rust-version {text:?}"))
    });
    let major = parts.next().expect("a major version");
    let minor = parts.next().unwrap_or(0);
    let patch = parts.next().unwrap_or(0);
    assert!(parts.next().is_none(), "bad rust-version {text:?}");
    (major, minor, patch)
}

/// The quoted value of `key = "value"` on `line`, if the line sets `key`.
fn value_of<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = line.trim().strip_prefix(key)?.trim_start();
    let quoted = rest.strip_prefix('=')?.trim();
    quoted.strip_prefix('"')?.strip_suffix('"')
}

/// The `rust-version` set in the `[section]` table of a manifest, if any.
fn rust_version_in(manifest: &str, section: &str) -> Option<String> {
    let mut current = String::new();
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            current = line.trim_matches(['[', ']']).trim().to_owned();
        } else if current == section
            && let Some(v) = value_of(line, "rust-version")
        {
            return Some(v.to_owned());
        }
    }
    None
}

/// `(name, version)` of every crate `Cargo.lock` pins from a registry.
fn locked_registry_crates(lock: &str) -> Vec<(String, String)> {
    let mut crates = Vec::new();
    for package in lock.split("[[package]]").skip(1) {
        let field = |key| package.lines().find_map(|l| value_of(l, key));
        let from_registry = field("source").is_some_and(|s| s.starts_with("registry+"));
        if let (true, Some(name), Some(version)) = (from_registry, field("name"), field("version"))
        {
            crates.push((name.to_owned(), version.to_owned()));
        }
    }
    crates
}

fn cargo_home() -> PathBuf {
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        return PathBuf::from(home);
    }
    let user = std::env::var_os("HOME")
        .or_else(|| std::env::var_os("USERPROFILE"))
        .expect("CARGO_HOME or a home directory");
    Path::new(&user).join(".cargo")
}

/// The manifest of `name-version` in any registry's source cache.
fn cached_manifest(registry_src: &Path, name: &str, version: &str) -> Option<String> {
    let registries = std::fs::read_dir(registry_src).ok()?;
    registries.flatten().find_map(|registry| {
        let manifest = registry
            .path()
            .join(format!("{name}-{version}"))
            .join("Cargo.toml");
        std::fs::read_to_string(manifest).ok()
    })
}

fn show((major, minor, patch): Version) -> String {
    format!("{major}.{minor}.{patch}")
}

#[test]
fn the_stated_minimum_rust_version_is_the_locked_crates_highest() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |file: &str| std::fs::read_to_string(root.join(file)).expect(file);

    let stated = rust_version_in(&read("Cargo.toml"), "workspace.package")
        .expect("a workspace rust-version");
    let locked = locked_registry_crates(&read("Cargo.lock"));
    assert!(!locked.is_empty(), "Cargo.lock pins no registry crate");

    let registry_src = cargo_home().join("registry").join("src");
    let mut found = 0;
    let mut highest: Option<(Version, String)> = None;
    for (name, version) in &locked {
        let Some(manifest) = cached_manifest(&registry_src, name, version) else {
            continue;
        };
        found += 1;
        let Some(needs) = rust_version_in(&manifest, "package") else {
            continue;
        };
        let needs = parse_version(&needs);
        if highest.as_ref().is_none_or(|(v, _)| needs > *v) {
            highest = Some((needs, format!("{name} {version}")));
        }
    }
    assert!(
        found > 0,
        "none of the {} locked crates is in {}: fetch them first (cargo fetch)",
        locked.len(),
        registry_src.display()
    );
    let (needed, by) = highest.expect("no locked crate states a rust-version");
    assert_eq!(
        show(parse_version(&stated)),
        show(needed),
        "the workspace's rust-version is {stated}, but {by} needs {}",
        show(needed)
    );

    // The README states the same minimum wherever it says "X.Y or newer".
    let readme = read("README.md");
    let claims: Vec<&str> = readme
        .match_indices(" or newer")
        .map(|(at, _)| {
            let before = &readme[..at];
            let start = before
                .rfind(|c: char| !(c.is_ascii_digit() || c == '.'))
                .map_or(0, |i| i + 1);
            &before[start..]
        })
        .filter(|v| !v.is_empty())
        .collect();
    assert!(
        !claims.is_empty(),
        "README.md states no minimum Rust version"
    );
    for claim in claims {
        assert_eq!(
            parse_version(claim),
            parse_version(&stated),
            "README.md says Rust {claim} or newer; Cargo.toml says {stated}"
        );
    }
}
