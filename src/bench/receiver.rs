//! `coffer bench-receiver`: a webhook receiver for benchmarks. It answers every request with
//! 200 at once and counts them, so a run measures Coffer's delivery, not a slow receiver; it
//! prints the count (and the rate since the first request) every `report_secs`.

use actix_web::{web, App, HttpResponse, HttpServer};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct ReceiverArgs {
    /// Port on 127.0.0.1.
    #[arg(long)]
    pub port: u16,
    /// Worker threads of the receiver (1 leaves the cores to the server under test).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Seconds between two count lines (0: none).
    #[arg(long, default_value_t = 5)]
    pub report_secs: u64,
}

pub async fn run(args: ReceiverArgs) -> anyhow::Result<()> {
    let received = Arc::new(AtomicU64::new(0));
    let first: Arc<std::sync::OnceLock<Instant>> = Arc::default();
    let (count, start) = (received.clone(), first.clone());
    let server = HttpServer::new(move || {
        let (count, start) = (count.clone(), start.clone());
        App::new().default_service(web::to(move |_body: web::Bytes| {
            start.get_or_init(Instant::now);
            count.fetch_add(1, Ordering::Relaxed);
            async { HttpResponse::Ok().finish() }
        }))
    })
    .workers(args.threads.max(1))
    .bind(("127.0.0.1", args.port))?
    .run();
    if args.report_secs > 0 {
        let every = Duration::from_secs(args.report_secs);
        actix_web::rt::spawn(async move {
            loop {
                actix_web::rt::time::sleep(every).await;
                let n = received.load(Ordering::Relaxed);
                let rate = first
                    .get()
                    .map(|t| n as f64 / t.elapsed().as_secs_f64().max(0.001))
                    .unwrap_or(0.0);
                println!("received {n} ({rate:.0}/s since the first)");
            }
        });
    }
    server.await?;
    Ok(())
}
