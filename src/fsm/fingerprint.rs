//! A stable digest of a machine's declared table, and the canonical hashing
//! the flow fingerprints use: SHA-256 over length-prefixed fields, so that
//! the same declaration hashes the same in every process and build (unlike
//! `std`'s randomly keyed hashers) and no two field lists collide by
//! concatenation.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use super::FsmTable;

/// SHA-256 over a sequence of length-prefixed fields.
pub(crate) struct Canonical(Sha256);

impl Canonical {
    /// A digest whose first field is `domain` (what is hashed, and the
    /// encoding's version: a change of encoding changes every digest).
    pub(crate) fn new(domain: &str) -> Self {
        let mut canonical = Canonical(Sha256::new());
        canonical.field(domain);
        canonical
    }

    /// Adds one field: its length (8 bytes, little-endian), then its bytes.
    pub(crate) fn field(&mut self, value: &str) -> &mut Self {
        self.0.update((value.len() as u64).to_le_bytes());
        self.0.update(value.as_bytes());
        self
    }

    /// Adds an optional field: a marker byte, then the field if present.
    pub(crate) fn opt(&mut self, value: Option<&str>) -> &mut Self {
        match value {
            Some(value) => {
                self.0.update([1]);
                self.field(value)
            }
            None => {
                self.0.update([0]);
                self
            }
        }
    }

    /// Adds a list of fields, its length first.
    pub(crate) fn list(&mut self, values: &[&str]) -> &mut Self {
        self.0.update((values.len() as u64).to_le_bytes());
        for value in values {
            self.field(value);
        }
        self
    }

    /// The digest, lower-case hex (64 characters).
    pub(crate) fn hex(self) -> String {
        let mut out = String::with_capacity(64);
        for byte in self.0.finalize() {
            let _ = write!(out, "{byte:02x}");
        }
        out
    }
}

impl FsmTable {
    /// A stable digest (lower-case hex SHA-256) of everything the table
    /// declares: its types' names, states, events, handlers with their
    /// targets, hooks, timeouts, initial and terminal states. Two
    /// declarations that would drive a machine differently digest
    /// differently; the same declaration digests the same in every build.
    ///
    /// ```
    /// use troupe::fsm::FsmTable;
    /// static EMPTY: FsmTable = FsmTable {
    ///     state_type: "S", event_type: "E", states: &[], events: &[], handlers: &[],
    ///     entry_hooks: &[], exit_hooks: &[], timeouts: &[], has_unhandled_hook: false,
    ///     unhandled_targets: None, initial: None, terminals: &[], all_states: &[],
    ///     all_events: &[],
    /// };
    /// assert_eq!(EMPTY.digest().len(), 64);
    /// assert_eq!(EMPTY.digest(), EMPTY.clone().digest());
    /// ```
    pub fn digest(&self) -> String {
        let mut c = Canonical::new("troupe-fsm-table/1");
        c.field(self.state_type).field(self.event_type);
        c.list(self.states).list(self.events);
        c.list(&[&self.handlers.len().to_string()]);
        for h in self.handlers {
            c.opt(h.state).field(h.event);
            targets(&mut c, h.targets);
            c.field(if h.sync { "sync" } else { "async" });
        }
        c.list(self.entry_hooks).list(self.exit_hooks);
        c.list(&[&self.timeouts.len().to_string()]);
        for t in self.timeouts {
            c.field(t.state).field(&t.after.as_nanos().to_string());
            c.field(if t.has_handler { "handler" } else { "error" });
            targets(&mut c, t.targets);
        }
        c.field(if self.has_unhandled_hook {
            "unhandled"
        } else {
            "-"
        });
        targets(&mut c, self.unhandled_targets);
        c.opt(self.initial).list(self.terminals);
        c.list(self.all_states).list(self.all_events);
        c.hex()
    }
}

fn targets(c: &mut Canonical, targets: Option<&[&str]>) {
    match targets {
        Some(list) => c.field("targets").list(list),
        None => c.field("any"),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_do_not_collide_by_concatenation() {
        let mut ab = Canonical::new("t");
        ab.field("ab").field("c");
        let mut a = Canonical::new("t");
        a.field("a").field("bc");
        assert_ne!(ab.hex(), a.hex());
    }

    #[test]
    fn the_encoding_is_fixed() {
        // A changed encoding changes every recorded fingerprint: on purpose
        // only. The value is SHA-256 of the bytes the doc describes
        // (checked independently: Python's hashlib over the same bytes).
        let mut c = Canonical::new("t");
        c.field("x").opt(None).opt(Some("y")).list(&["a"]);
        assert_eq!(
            c.hex(),
            "1874f20b1c06266802c67e1c82101a57143fc7662067df8a8efc08c01211aad7"
        );
    }
}
