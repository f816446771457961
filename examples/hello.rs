//! The smallest ringloop program: spawn tasks, sleep on the ring's clock, stop, close.
//!
//! `cargo run --example hello`

use std::time::{Duration, Instant};

use ringloop::{time, EventLoop};

fn main() -> std::io::Result<()> {
    let mut lp = EventLoop::new()?;
    println!(
        "ringloop on Linux {}: {:?}, {} SQ entries",
        lp.features().kernel_release(),
        lp.features().setup_mode(),
        lp.features().sq_entries()
    );
    let handle = lp.handle();
    let t0 = Instant::now();
    for i in 1..=3u64 {
        lp.spawn(async move {
            time::sleep(Duration::from_millis(100 * i)).await;
            println!("task {i} woke after {:?}", t0.elapsed());
        });
    }
    lp.spawn(async move {
        time::sleep(Duration::from_millis(350)).await;
        println!("stopping");
        handle.stop();
    });
    lp.run_forever()?;
    lp.close()?;
    println!("closed cleanly");
    Ok(())
}
