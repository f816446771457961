//! Files on the ring, through the public API.

use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use ringloop::fs::{self, File, OpenOptions};
use ringloop::{spawn, time, EventLoop};

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("ringloop-fs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn join(&self, f: &str) -> PathBuf {
        self.0.join(f)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run<F: std::future::Future>(f: F) -> F::Output {
    EventLoop::new().unwrap().block_on(f)
}

#[test]
fn sixty_four_mib_round_trip_in_one_mib_chunks() {
    const CHUNK: usize = 1 << 20;
    let dir = TempDir::new("big");
    let path = dir.join("big.bin");
    let pattern = |i: usize| (i.wrapping_mul(2654435761) >> 13) as u8;
    run(async {
        let f = File::create(&path).await.unwrap();
        for c in 0..64 {
            let chunk: Vec<u8> = (c * CHUNK..(c + 1) * CHUNK).map(pattern).collect();
            let (r, _) = f.write_all_at(chunk, (c * CHUNK) as u64).await;
            r.unwrap();
        }
        f.sync_all().await.unwrap();
        f.close().await.unwrap();
        let f = File::open(&path).await.unwrap();
        assert_eq!(f.metadata().await.unwrap().len(), 64 * CHUNK as u64);
        let mut buf = Vec::with_capacity(CHUNK);
        for c in 0..64 {
            let (r, b) = f.read_at(buf, (c * CHUNK) as u64).await;
            assert_eq!(r.unwrap(), CHUNK);
            assert!(
                b.iter()
                    .enumerate()
                    .all(|(i, &x)| x == pattern(c * CHUNK + i)),
                "chunk {c} differs"
            );
            buf = b;
        }
    });
}

#[test]
fn read_past_eof_gives_zero() {
    let dir = TempDir::new("eof");
    let path = dir.join("small");
    std::fs::write(&path, b"12345").unwrap();
    run(async {
        let f = File::open(&path).await.unwrap();
        let (r, b) = f.read_at(Vec::with_capacity(16), 5).await;
        assert_eq!(r.unwrap(), 0);
        assert!(b.is_empty());
        let (r, _) = f.read_at(Vec::with_capacity(16), 1000).await;
        assert_eq!(r.unwrap(), 0);
    });
}

#[test]
fn metadata_length_and_kind() {
    let dir = TempDir::new("meta");
    let path = dir.join("m");
    std::fs::write(&path, vec![0u8; 1234]).unwrap();
    run(async {
        let f = File::open(&path).await.unwrap();
        let m = f.metadata().await.unwrap();
        assert_eq!(m.len(), 1234);
        assert!(m.is_file());
        assert!(!m.is_dir());
        let std_mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        assert_eq!(m.modified().unwrap(), std_mtime);
        let d = File::open(&dir.0).await.unwrap();
        assert!(d.metadata().await.unwrap().is_dir());
    });
}

#[test]
fn open_missing_is_not_found_naming_the_path() {
    let dir = TempDir::new("missing");
    let path = dir.join("nope.txt");
    let e = run(File::open(&path)).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    assert!(e.to_string().contains("nope.txt"), "{e}");
}

#[test]
fn open_options_follow_std_semantics() {
    let dir = TempDir::new("opts");
    let path = dir.join("o");
    run(async {
        fs::write(&path, b"abc").await.unwrap();
        let f = OpenOptions::new().append(true).open(&path).await.unwrap();
        let (r, _) = f.write_all_at(b"def", 0).await; // O_APPEND: the offset is ignored
        r.unwrap();
        f.close().await.unwrap();
        assert_eq!(fs::read(&path).await.unwrap(), b"abcdef");
        let e = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        let e = OpenOptions::new().open(&path).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
        let f = File::options()
            .write(true)
            .truncate(true)
            .open(&path)
            .await
            .unwrap();
        f.sync_data().await.unwrap();
        drop(f);
        assert_eq!(fs::read(&path).await.unwrap(), b"");
    });
}

#[test]
fn path_operations() {
    let dir = TempDir::new("paths");
    run(async {
        let sub = dir.join("sub");
        fs::create_dir(&sub).await.unwrap();
        assert!(sub.is_dir());
        let e = fs::create_dir(&sub).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        let a = sub.join("a");
        let b = sub.join("b");
        fs::write(&a, "contents".to_string()).await.unwrap();
        fs::rename(&a, &b).await.unwrap();
        assert!(!a.exists());
        assert_eq!(fs::read(&b).await.unwrap(), b"contents");
        fs::remove_file(&b).await.unwrap();
        let e = fs::remove_file(&b).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
        assert!(e.to_string().contains("sub/b"), "{e}");
        let e = fs::write("/definitely/not/here", b"x").await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    });
}

#[test]
fn a_thousand_concurrent_reads_of_one_file() {
    let dir = TempDir::new("many");
    let path = dir.join("blocks");
    let data: Vec<u8> = (0..1000u32).flat_map(|i| [(i % 251) as u8; 64]).collect();
    std::fs::write(&path, &data).unwrap();
    run(async {
        let f = Rc::new(File::open(&path).await.unwrap());
        let tasks: Vec<_> = (0..1000u32)
            .map(|i| {
                let f = f.clone();
                spawn(async move {
                    let (r, b) = f.read_at(Vec::with_capacity(64), i as u64 * 64).await;
                    assert_eq!(r.unwrap(), 64);
                    assert!(b.iter().all(|&x| x == (i % 251) as u8), "block {i}");
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
}

#[test]
fn dropped_read_at_leaves_the_loop_sound() {
    let dir = TempDir::new("dropped");
    let path = dir.join("d");
    std::fs::write(&path, vec![9u8; 1 << 20]).unwrap();
    let mut lp = EventLoop::new().unwrap();
    lp.block_on(async {
        let f = File::open(&path).await.unwrap();
        // Start reads and drop them at once, many times over, some mid-flight.
        for i in 0..200u64 {
            let _ = time::timeout(
                Duration::ZERO,
                f.read_at(Vec::with_capacity(64 * 1024), i * 4096),
            )
            .await;
        }
        let (r, b) = f.read_at(Vec::with_capacity(16), 0).await;
        assert_eq!(r.unwrap(), 16);
        assert_eq!(b, vec![9u8; 16]);
    });
    lp.close().unwrap();
}

#[test]
fn path_with_nul_is_invalid_input() {
    let e = run(File::open("bad\0path")).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
}
