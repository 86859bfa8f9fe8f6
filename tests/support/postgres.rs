//! PostgreSQL for tests: each test gets a fresh schema of the database that
//! `TROUPE_TEST_POSTGRES_URL` names (start one with `.ci/postgres.sh start`),
//! dropped when its guard drops. Without the variable a test is skipped
//! loudly, unless `TROUPE_REQUIRE_POSTGRES=1` (CI), which makes it fail.

#![allow(dead_code)]

use troupe::store::{PostgresConfig, PostgresStore};

/// The server's URL, or `None` (after saying so) when the test must skip.
pub fn url() -> Option<String> {
    match std::env::var("TROUPE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            if std::env::var("TROUPE_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                panic!(
                    "TROUPE_REQUIRE_POSTGRES=1 but TROUPE_TEST_POSTGRES_URL is not set \
                     (start a server with `.ci/postgres.sh start`)"
                );
            }
            eprintln!(
                "SKIPPED: PostgreSQL test: TROUPE_TEST_POSTGRES_URL not set \
                 (start a server with `.ci/postgres.sh start`)"
            );
            None
        }
    }
}

/// A fresh schema, dropped (with everything in it) on drop.
pub struct Schema {
    pub url: String,
    pub name: String,
}

impl Schema {
    /// A new, unique schema name in the test database (created by the
    /// store that opens it).
    pub fn new(url: &str) -> Schema {
        Schema {
            url: url.to_owned(),
            name: format!("t_{}", uuid::Uuid::now_v7().simple()),
        }
    }

    pub fn config(&self) -> PostgresConfig {
        PostgresConfig {
            schema: Some(self.name.clone()),
            readers: 1,
            ..PostgresConfig::default()
        }
    }

    /// A store over this schema.
    pub async fn store(&self) -> PostgresStore {
        PostgresStore::connect_with(&self.url, self.config())
            .await
            .expect("connect to the test database")
    }

    /// The test database's URL with `search_path` set to this schema (for
    /// callers that take a URL only, like `RuntimeBuilder::postgres`).
    pub fn url_with_search_path(&self) -> String {
        let option = format!("-csearch_path={}", self.name);
        if self.url.starts_with("postgres://") || self.url.starts_with("postgresql://") {
            let sep = if self.url.contains('?') { '&' } else { '?' };
            format!("{}{sep}options={}", self.url, option.replace('=', "%3D"))
        } else {
            format!("{} options='{option}'", self.url)
        }
    }

    /// Creates the schema (a store over it creates it too).
    pub async fn create(&self) {
        self.client()
            .await
            .batch_execute(&format!("CREATE SCHEMA \"{}\"", self.name))
            .await
            .expect("create the test schema");
    }

    /// Lets every run lease in the schema lapse, as if their owners had
    /// died or stalled: the next claim may take them.
    pub async fn lapse_leases(&self) {
        self.client()
            .await
            .batch_execute(&format!(
                "UPDATE \"{}\".runs SET lease_expires_at = 0",
                self.name
            ))
            .await
            .expect("lapse leases");
    }

    /// A plain client of the test database (its driver task on the current runtime).
    pub async fn client(&self) -> tokio_postgres::Client {
        client(&self.url).await
    }
}

/// A plain client of the database at `url`.
pub async fn client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

impl Drop for Schema {
    fn drop(&mut self) {
        // The test's runtime may be gone: drop the schema from a thread of
        // its own, with a runtime of its own.
        let url = self.url.clone();
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async move {
                let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .ok()?;
                tokio::spawn(connection);
                client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                    .await
                    .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("could not drop test schema {}", self.name);
        }
    }
}
