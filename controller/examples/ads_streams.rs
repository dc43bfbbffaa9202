//! Benchmark client: opens many delta ADS streams to a controller, each with its own node
//! id and its own connection (as that many proxies would), ACKs every response, and holds
//! the streams open, so that `e2e/bench/controller.sh` can measure the controller's memory
//! with that many proxies connected.
//!
//! ```sh
//! cargo run --release -p agentmesh-controller --example ads_streams -- \
//!     --xds http://127.0.0.1:16010 --streams 500 --hold-seconds 30 \
//!     --node-id 'sidecar~127.0.0.1~bench-{i}.default'
//! ```
//!
//! It prints `connected streams=N resources=R` once every stream has received its first
//! response (the line the bench waits for), then holds for `--hold-seconds` (or until
//! killed) and prints `done updates=U` (responses after the first, all streams).
//! Bounded: exactly `--streams` streams, at most `--hold-seconds` plus the connect bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use agentmesh_proto::envoy::config::core::v3::Node;
use agentmesh_proto::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use agentmesh_proto::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use agentmesh_proxy::config::xds::TYPE_URL;
use clap::Parser;
use tokio::sync::mpsc;

/// Opens many delta ADS streams and holds them.
#[derive(Debug, Parser)]
struct Args {
    /// The controller's xDS address.
    #[arg(long)]
    xds: String,
    /// How many streams (each on its own connection).
    #[arg(long, default_value_t = 500)]
    streams: usize,
    /// Node id template; `{i}` is replaced by the stream's number.
    #[arg(long, default_value = "sidecar~127.0.0.1~bench-{i}.default")]
    node_id: String,
    /// How long to hold the streams once all are connected.
    #[arg(long, default_value_t = 30)]
    hold_seconds: u64,
    /// How long all streams may take to receive their first response.
    #[arg(long, default_value_t = 60)]
    connect_seconds: u64,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let updates = Arc::new(AtomicU64::new(0));
    let (first_tx, mut first_rx) = mpsc::channel::<Result<usize, String>>(args.streams.max(1));
    let mut tasks = Vec::new();
    for i in 0..args.streams {
        let node_id = args.node_id.replace("{i}", &i.to_string());
        let address = args.xds.clone();
        let first_tx = first_tx.clone();
        let updates = updates.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = stream(address, node_id.clone(), &first_tx, &updates).await {
                let _ = first_tx.send(Err(format!("{node_id}: {e}"))).await;
            }
        }));
    }
    drop(first_tx);
    let mut connected = 0;
    let mut resources = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.connect_seconds);
    while connected < args.streams {
        match tokio::time::timeout_at(deadline, first_rx.recv()).await {
            Ok(Some(Ok(n))) => {
                connected += 1;
                resources += n;
            }
            Ok(Some(Err(e))) => return Err(e.into()),
            Ok(None) => return Err("every stream ended before its first response".into()),
            Err(_) => {
                return Err(format!(
                    "only {connected} of {} streams got a response within {} s",
                    args.streams, args.connect_seconds
                )
                .into());
            }
        }
    }
    println!("connected streams={connected} resources={resources}");
    tokio::time::sleep(Duration::from_secs(args.hold_seconds)).await;
    println!("done updates={}", updates.load(Ordering::Relaxed));
    for task in tasks {
        task.abort();
    }
    Ok(())
}

/// One stream: subscribe to everything, report the first response's size, ACK all.
async fn stream(
    address: String,
    node_id: String,
    first: &mpsc::Sender<Result<usize, String>>,
    updates: &AtomicU64,
) -> Result<(), BoxError> {
    let channel = tonic::transport::Endpoint::from_shared(address)?
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await?;
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let (requests, outbound) = mpsc::channel(4);
    requests
        .send(DeltaDiscoveryRequest {
            node: Some(Node {
                id: node_id,
                metadata: None,
            }),
            type_url: TYPE_URL.into(),
            resource_names_subscribe: vec!["*".into()],
            ..Default::default()
        })
        .await?;
    let mut responses = client
        .delta_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(outbound))
        .await?
        .into_inner();
    let mut received = 0u64;
    while let Some(response) = responses.message().await? {
        if received == 0 {
            let _ = first.send(Ok(response.resources.len())).await;
        } else {
            updates.fetch_add(1, Ordering::Relaxed);
        }
        received += 1;
        requests
            .send(DeltaDiscoveryRequest {
                type_url: response.type_url,
                response_nonce: response.nonce,
                ..Default::default()
            })
            .await?;
    }
    Ok(())
}
