//! `coffer bench`: drives a running server over HTTP and reports throughput, latency and a
//! final balance check per scenario.

/// Placeholder until the bench tool lands.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Base URL of the server under test.
    #[arg(long, default_value = "http://127.0.0.1:5001")]
    pub url: String,
}

pub async fn run(_args: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("coffer bench is not implemented yet")
}
