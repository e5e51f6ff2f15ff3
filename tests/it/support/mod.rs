//! The harness: test databases on both backends, a control plane with known
//! credentials, and helpers shared by the suites.

pub mod db;
pub mod fleet;
pub mod http_fixture;
pub mod mcp_client;
pub mod mcp_upstream;
pub mod plane;
pub mod process_fleet;
pub mod readme;
pub mod snapshot;
pub mod tools;
pub mod up;
pub mod up_process;

pub use db::{Backend, TestDb};
pub use plane::TestControlPlane;

use std::sync::Once;

/// Installs a log subscriber once when `TEST_LOG` is set.
pub fn init_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(
                    std::env::var("TEST_LOG")
                        .ok()
                        .filter(|v| v != "1")
                        .unwrap_or_else(|| "debug".into()),
                ))
                .with_test_writer()
                .try_init();
        }
    });
}

/// Runs one async test body on SQLite and on PostgreSQL: `store_test!(name, |db| async move { … })`.
/// The PostgreSQL case fails under `CI=true` when the server is unreachable and
/// otherwise skips with a loud message.
#[macro_export]
macro_rules! store_test {
    ($name:ident, |$db:ident| $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $crate::support::init_logging();
                let $db = $crate::support::TestDb::new($crate::support::Backend::Sqlite).await;
                $body.await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                $crate::support::init_logging();
                let Some($db) = $crate::support::TestDb::postgres_or_skip().await else {
                    return;
                };
                $body.await;
            }
        }
    };
}
