//! The client's hot path allocates nothing per request once warmed up: puts, and gets into a
//! reused buffer, over a real connection to a real store. Counted with a global allocator
//! that tallies every allocation this test process makes (the store is another process).
mod common;

use common::Cluster;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use vasto_client::Client;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Requests per measured round; allocations must stay far below one per request.
const REQUESTS: u64 = 20_000;

#[test]
fn puts_and_gets_into_a_reused_buffer_do_not_allocate() {
    let cluster = Cluster::start(1);
    cluster.create_keyspace("alloc", 2, 1);
    // One thread runs the client and its connection tasks, so nothing else in this process
    // allocates while counting.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let client = Client::connect(&cluster.master_addr).await.expect("connect");
        let ks = client.keyspace("alloc").await.expect("keyspace");
        let keys: Vec<Vec<u8>> = (0..100).map(|i| format!("key-{i}").into_bytes()).collect();
        let value = vec![b'v'; 100];
        let mut buf = Vec::with_capacity(256);
        // Warm up: dial both shards' connection, size every buffer.
        for k in &keys {
            ks.put(k, &value).await.expect("put");
            assert!(ks.get_into(k, &mut buf).await.expect("get"), "just written");
        }
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        for i in 0..REQUESTS {
            let k = &keys[(i % 100) as usize];
            if i % 2 == 0 {
                ks.put(k, &value).await.expect("put");
            } else {
                assert!(ks.get_into(k, &mut buf).await.expect("get"));
                assert_eq!(buf, value);
            }
        }
        let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
        println!("{allocations} allocations over {REQUESTS} requests");
        // A handful is tolerated (a routing-table push, a timer-wheel level); per request it is 0.
        assert!(allocations < REQUESTS / 100, "{allocations} allocations over {REQUESTS} requests");
        // A missing key leaves the buffer empty.
        assert!(!ks.get_into(b"missing", &mut buf).await.expect("get"));
        assert!(buf.is_empty());
    });
}
