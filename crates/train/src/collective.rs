//! Collective operations between the ranks of a data-parallel stage, behind one small trait.
//!
//! tch binds no `torch.distributed`, so leo brings its own: [`TcpRing`] runs here, on the CPU,
//! over loopback or the cluster network (what Gloo does for PyTorch); a GPU backend implements
//! the same three operations with NCCL. Every operation works in place on one flat, contiguous
//! buffer whose length is a multiple of the world size: chunk `r` belongs to rank `r`. That is
//! exactly what ZeRO-1 needs (Rajbhandari et al. 2020, "ZeRO: Memory Optimizations Toward
//! Training Trillion Parameter Models"): gradients reduce-scattered, each rank updates its chunk
//! of the parameters, parameters all-gathered.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use tch::{Device, Kind, Tensor};

pub trait Collective: Send {
    fn rank(&self) -> usize;
    fn world_size(&self) -> usize;
    /// Afterwards chunk `rank` of `buf` holds the sum over ranks of that chunk; other chunks
    /// are scratch.
    fn reduce_scatter(&mut self, buf: &mut Tensor) -> Result<()>;
    /// Afterwards every chunk of `buf` holds its owner's chunk.
    fn all_gather(&mut self, buf: &mut Tensor) -> Result<()>;
    /// Every element of `buf` summed over ranks.
    fn all_reduce(&mut self, buf: &mut Tensor) -> Result<()> {
        self.reduce_scatter(buf)?;
        self.all_gather(buf)
    }
}

/// Sums a few f64 scalars over ranks (losses, token counts, flags).
pub fn all_reduce_scalars(c: &mut dyn Collective, values: &[f64]) -> Result<Vec<f64>> {
    let w = c.world_size();
    let len = values.len().div_ceil(w) * w;
    let mut padded = values.to_vec();
    padded.resize(len, 0.0);
    let mut buf = Tensor::from_slice(&padded);
    c.all_reduce(&mut buf)?;
    let mut out = vec![0f64; len];
    buf.copy_data(&mut out, len);
    out.truncate(values.len());
    Ok(out)
}

/// One process: every operation leaves the buffer as it is.
pub struct Single;

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn reduce_scatter(&mut self, _buf: &mut Tensor) -> Result<()> {
        Ok(())
    }
    fn all_gather(&mut self, _buf: &mut Tensor) -> Result<()> {
        Ok(())
    }
}

/// Ring reduce-scatter and all-gather over TCP (Patarasuk & Yuan 2009, "Bandwidth optimal
/// all-reduce algorithms for clusters of workstations"): each rank sends to the next and
/// receives from the previous, W−1 rounds each, so every rank moves 2(W−1)/W of the buffer
/// whatever the world size. Sums are taken in a fixed order, so results repeat exactly.
pub struct TcpRing {
    rank: usize,
    world: usize,
    next: TcpStream,
    prev: TcpStream,
}

/// How long ranks wait for each other to appear.
const RENDEZVOUS_TIMEOUT: Duration = Duration::from_secs(300);

impl TcpRing {
    /// Connects `world` ranks through `rendezvous` (`host:port`, the address rank 0 listens
    /// on): rank 0 collects every rank's ring address and sends the table back; then each rank
    /// connects to the next and accepts the previous.
    pub fn connect(rendezvous: &str, rank: usize, world: usize) -> Result<TcpRing> {
        ensure!(world >= 2, "a ring needs two ranks or more, got {world}");
        ensure!(rank < world, "rank {rank} is outside a world of {world}");
        let addr = rendezvous
            .to_socket_addrs()
            .with_context(|| format!("resolving the rendezvous address {rendezvous}"))?
            .next()
            .with_context(|| format!("the rendezvous address {rendezvous} resolves to nothing"))?;
        let deadline = Instant::now() + RENDEZVOUS_TIMEOUT;
        let (listener, table) = if rank == 0 {
            let server = TcpListener::bind(addr)
                .with_context(|| format!("rank 0: listening on the rendezvous address {addr}"))?;
            let ring =
                TcpListener::bind((addr.ip(), 0)).context("rank 0: opening the ring port")?;
            let mut table = vec![ring.local_addr()?; world];
            let mut peers = Vec::new();
            for _ in 1..world {
                let (mut s, _) = server.accept().context("rank 0: accepting a rank")?;
                let r = read_u64(&mut s)? as usize;
                let port = read_u64(&mut s)? as u16;
                ensure!(
                    r > 0 && r < world,
                    "a peer announced rank {r} in a world of {world}"
                );
                table[r] = SocketAddr::new(s.peer_addr()?.ip(), port);
                peers.push(s);
            }
            for s in &mut peers {
                for a in &table {
                    write_addr(s, a)?;
                }
            }
            (ring, table)
        } else {
            let mut s = connect_until(addr, deadline)
                .with_context(|| format!("rank {rank}: reaching rank 0 at {addr}"))?;
            // Listen where rank 0 sees us: the interface that reaches the rendezvous.
            let ring = TcpListener::bind((s.local_addr()?.ip(), 0))
                .with_context(|| format!("rank {rank}: opening the ring port"))?;
            write_u64(&mut s, rank as u64)?;
            write_u64(&mut s, u64::from(ring.local_addr()?.port()))?;
            let table = (0..world)
                .map(|_| read_addr(&mut s))
                .collect::<Result<Vec<_>>>()
                .with_context(|| format!("rank {rank}: reading the ring table from rank 0"))?;
            (ring, table)
        };
        let next_addr = table[(rank + 1) % world];
        // Connect and accept at once: with two ranks each is the other's next and previous.
        let (next, prev) = std::thread::scope(|scope| {
            let connector = scope.spawn(move || -> Result<TcpStream> {
                let mut s = connect_until(next_addr, deadline)?;
                write_u64(&mut s, rank as u64)?;
                Ok(s)
            });
            let accepted = (|| -> Result<TcpStream> {
                let (mut s, _) = listener.accept()?;
                let from = read_u64(&mut s)? as usize;
                ensure!(
                    from == (rank + world - 1) % world,
                    "rank {rank}: expected rank {} on the ring, got {from}",
                    (rank + world - 1) % world
                );
                Ok(s)
            })();
            let next = connector
                .join()
                .map_err(|_| anyhow::anyhow!("the ring connector panicked"))?;
            Ok::<_, anyhow::Error>((next?, accepted?))
        })
        .with_context(|| format!("rank {rank}: forming the ring of {world}"))?;
        next.set_nodelay(true)?;
        prev.set_nodelay(true)?;
        Ok(TcpRing {
            rank,
            world,
            next,
            prev,
        })
    }

    /// Sends chunk `send` to the next rank while receiving the previous rank's chunk `recv`
    /// into `scratch`.
    fn exchange(&mut self, data: &[u8], scratch: &mut [u8]) -> Result<()> {
        let (next, prev) = (&mut self.next, &mut self.prev);
        std::thread::scope(|scope| {
            let sender = scope.spawn(move || next.write_all(data));
            let received = prev.read_exact(scratch);
            let sent = sender
                .join()
                .map_err(|_| anyhow::anyhow!("the ring sender panicked"))?;
            sent.context("sending to the next rank")?;
            received.context("receiving from the previous rank (did it fail?)")?;
            Ok(())
        })
    }
}

impl Collective for TcpRing {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    fn reduce_scatter(&mut self, buf: &mut Tensor) -> Result<()> {
        let (w, r) = (self.world, self.rank);
        let chunk = chunk_len(buf, w)?;
        let mut scratch = buf.narrow(0, 0, chunk as i64).zeros_like();
        for k in 0..w - 1 {
            let send = (r + 2 * w - k - 1) % w;
            let recv = (r + 2 * w - k - 2) % w;
            let out = buf.narrow(0, (send * chunk) as i64, chunk as i64);
            self.exchange(bytes(&out), bytes_mut(&mut scratch))?;
            let mut into = buf.narrow(0, (recv * chunk) as i64, chunk as i64);
            let _ = into.g_add_(&scratch);
        }
        Ok(())
    }

    fn all_gather(&mut self, buf: &mut Tensor) -> Result<()> {
        let (w, r) = (self.world, self.rank);
        let chunk = chunk_len(buf, w)?;
        for k in 0..w - 1 {
            let send = (r + w - k) % w;
            let recv = (r + 2 * w - k - 1) % w;
            let out = buf.narrow(0, (send * chunk) as i64, chunk as i64);
            let mut into = buf.narrow(0, (recv * chunk) as i64, chunk as i64);
            // Different chunks of one buffer: the two slices never overlap.
            self.exchange(bytes(&out), bytes_mut(&mut into))?;
        }
        Ok(())
    }
}

fn chunk_len(buf: &Tensor, world: usize) -> Result<usize> {
    ensure!(
        buf.device() == Device::Cpu && buf.is_contiguous() && buf.dim() == 1,
        "collectives over TCP work on flat, contiguous CPU tensors"
    );
    ensure!(
        matches!(buf.kind(), Kind::Float | Kind::Double),
        "collectives over TCP sum f32 or f64 tensors, not {:?}",
        buf.kind()
    );
    let n = buf.numel();
    if !n.is_multiple_of(world) {
        bail!("a buffer of {n} elements does not split into {world} equal chunks");
    }
    Ok(n / world)
}

fn bytes(t: &Tensor) -> &[u8] {
    let len = t.numel() * t.kind().elt_size_in_bytes();
    // SAFETY: a contiguous CPU tensor of `len` bytes, borrowed for the tensor's lifetime.
    unsafe { std::slice::from_raw_parts(t.data_ptr() as *const u8, len) }
}

fn bytes_mut(t: &mut Tensor) -> &mut [u8] {
    let len = t.numel() * t.kind().elt_size_in_bytes();
    // SAFETY: as above, and the tensor is borrowed mutably.
    unsafe { std::slice::from_raw_parts_mut(t.data_ptr() as *mut u8, len) }
}

fn connect_until(addr: SocketAddr, deadline: Instant) -> Result<TcpStream> {
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Ok(s) => return Ok(s),
            // The peer may not be listening yet: it starts at the same time as we do.
            Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("no answer from {addr} in {}s", RENDEZVOUS_TIMEOUT.as_secs())
                })
            }
        }
    }
}

fn write_u64(s: &mut TcpStream, v: u64) -> Result<()> {
    s.write_all(&v.to_le_bytes()).context("writing to a peer")
}

fn read_u64(s: &mut TcpStream) -> Result<u64> {
    let mut b = [0u8; 8];
    s.read_exact(&mut b).context("reading from a peer")?;
    Ok(u64::from_le_bytes(b))
}

fn write_addr(s: &mut TcpStream, a: &SocketAddr) -> Result<()> {
    let text = a.to_string();
    write_u64(s, text.len() as u64)?;
    s.write_all(text.as_bytes()).context("writing to a peer")
}

fn read_addr(s: &mut TcpStream) -> Result<SocketAddr> {
    let n = read_u64(s)? as usize;
    ensure!(n < 256, "a peer sent an address of {n} bytes");
    let mut b = vec![0u8; n];
    s.read_exact(&mut b).context("reading from a peer")?;
    String::from_utf8(b)?
        .parse()
        .context("a peer sent a malformed address")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_port() -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    }

    /// Runs `f` on `world` ranks (threads, real sockets) and returns their results.
    fn ranks<T: Send>(world: usize, f: impl Fn(&mut TcpRing) -> T + Sync) -> Vec<T> {
        let addr = free_port();
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..world)
                .map(|r| {
                    let (addr, f) = (&addr, &f);
                    s.spawn(move || f(&mut TcpRing::connect(addr, r, world).unwrap()))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    #[test]
    fn ring_sums_chunks_and_gathers_them_for_several_world_sizes() {
        for world in [2usize, 3, 4] {
            let out = ranks(world, |ring| {
                let r = ring.rank() as f64;
                // Rank r holds r + 1 + i / 1000 at position i.
                let n = 6 * world as i64;
                let mut buf = Tensor::arange(n, (Kind::Float, Device::Cpu)) / 1000.0 + (r + 1.0);
                let mut reduced = buf.copy();
                ring.reduce_scatter(&mut reduced).unwrap();
                ring.all_reduce(&mut buf).unwrap();
                let chunk = reduced.narrow(0, ring.rank() as i64 * 6, 6).copy();
                (
                    Vec::<f32>::try_from(&buf).unwrap(),
                    Vec::<f32>::try_from(&chunk).unwrap(),
                )
            });
            let total: f32 = (1..=world).map(|r| r as f32).sum();
            for (rank, (all, chunk)) in out.iter().enumerate() {
                for (i, v) in all.iter().enumerate() {
                    let want = total + world as f32 * i as f32 / 1000.0;
                    assert!((v - want).abs() < 1e-5, "world {world} rank {rank} [{i}]");
                }
                assert_eq!(chunk[..], all[rank * 6..rank * 6 + 6]);
            }
        }
    }

    #[test]
    fn scalars_are_summed_over_ranks() {
        let out = ranks(2, |ring| {
            let rank = ring.rank() as f64;
            all_reduce_scalars(ring, &[1.0, rank, 0.5]).unwrap()
        });
        assert_eq!(out[0], vec![2.0, 1.0, 1.0]);
        assert_eq!(out[1], out[0]);
    }

    #[test]
    fn a_buffer_that_does_not_split_evenly_is_an_error() {
        let out = ranks(2, |ring| {
            ring.reduce_scatter(&mut Tensor::zeros([5], (Kind::Float, Device::Cpu)))
                .is_err()
        });
        assert_eq!(out, vec![true, true]);
    }
}
