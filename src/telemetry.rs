//! Logging through `tracing`. `RUST_LOG` filters (default `info`); exporters come later.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once; later calls do nothing. Colours only on a terminal.
pub fn init(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .try_init();
}
