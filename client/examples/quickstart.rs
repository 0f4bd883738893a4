//! Runnable client example. Start a cluster (`./scripts/dev.sh` or `vasto dev`), then:
//!
//! ```sh
//! cargo run -p vasto-client --example quickstart -- 127.0.0.1:8278
//! ```
use std::time::Duration;
use vasto_client::{BatchOp, Client, PutOptions};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let master = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8278".into());
    let client = Client::connect(&master).await?;
    let ks = client.keyspace("default").await?;

    ks.put(b"greeting", b"hello").await?;
    println!("greeting = {:?}", ks.get(b"greeting").await?.map(String::from_utf8));

    ks.put_with(b"session", b"short-lived", PutOptions { ttl: Some(Duration::from_secs(30)), ..Default::default() }).await?;
    ks.batch(&[BatchOp::Put { key: b"fruit:apple", value: b"red" }, BatchOp::Put { key: b"fruit:kiwi", value: b"green" }]).await?;
    let page = ks.scan_prefix(b"fruit:", b"", 10).await?;
    for (k, v) in page.entries {
        println!("{} = {}", String::from_utf8_lossy(&k), String::from_utf8_lossy(&v));
    }
    ks.delete(b"greeting").await?;
    println!("after delete: {:?}", ks.get(b"greeting").await?);
    Ok(())
}
