//! Real servers for leo's tests, started and removed by the tests themselves, on loopback only.
//!
//! - [`Postgres`]: a throwaway PostgreSQL cluster (`initdb` + `postgres`) in a temp folder on a
//!   free port; [`Postgres::database`] makes a fresh database per test.

mod postgres;

pub use postgres::Postgres;

/// Whether the tests run in CI (`CI=true`), where a missing server or data set is a failure,
/// never a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}
