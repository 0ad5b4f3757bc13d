//! The broker's seams to its async runtime, so the same code runs under the deterministic
//! simulator (`harness sim`) as in production:
//!
//! - [`spawn_blocking`]: production hands the closure to tokio's blocking pool (OS threads); a
//!   simulated thread ([`set_simulated`]) runs it as an ordinary task on the one simulation
//!   thread instead, so no OS thread's timing can decide the order of events. That task first
//!   awaits [`crate::storage::ready`]: a simulated disk that is stalled holds the work (in
//!   virtual time) until the stall ends, a slow one delays it.
//! - [`RaftRuntime`]: openraft's runtime type. It is tokio's, except that openraft's random
//!   election timeouts come from [`SeededRng`], a per-thread generator seeded through std's
//!   `RandomState` (which the simulator makes deterministic) instead of `rand::thread_rng()`
//!   (which reads the OS's entropy and no simulator can seed).

use std::cell::Cell;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use openraft::async_runtime::TokioOneShotSender;
use openraft::{AsyncRuntime, OptionalSend, TokioInstant};

thread_local! {
    static SIMULATED: Cell<bool> = const { Cell::new(false) };
    static RNG_STATE: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Marks the calling thread as a simulation thread (or not): [`spawn_blocking`] then runs
/// closures as tasks on the current runtime. Never set in production.
pub fn set_simulated(on: bool) {
    SIMULATED.with(|s| s.set(on));
}

/// Whether the calling thread is a simulation thread.
pub fn is_simulated() -> bool {
    SIMULATED.with(Cell::get)
}

/// Runs blocking work (disk I/O under a partition lock): on tokio's blocking pool in
/// production, as a task of the current runtime on a simulation thread, after the simulated
/// disk of the node is ready ([`crate::storage::ready`]: stalls and latency).
pub fn spawn_blocking<F, R>(f: F) -> tokio::task::JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    if is_simulated() {
        tokio::spawn(async move {
            crate::storage::ready().await;
            f()
        })
    } else {
        tokio::task::spawn_blocking(f)
    }
}

/// 16 bytes from the thread's [`SeededRng`] on a simulation thread (None elsewhere: callers
/// use the OS's entropy there, as before).
pub fn simulated_random_16() -> Option<[u8; 16]> {
    if !is_simulated() {
        return None;
    }
    let mut out = [0u8; 16];
    rand_core_06::RngCore::fill_bytes(&mut SeededRng, &mut out);
    Some(out)
}

/// A small per-thread generator (SplitMix64) for openraft's election timeouts. Its seed comes
/// from std's `RandomState` once per thread: random in production, fixed by the seed under the
/// simulator, which makes std's hash keys deterministic.
#[derive(Debug, Clone, Copy, Default)]
pub struct SeededRng;

impl SeededRng {
    fn next(&mut self) -> u64 {
        RNG_STATE.with(|s| {
            let mut x = s.get().unwrap_or_else(|| {
                let mut h = std::collections::hash_map::RandomState::new().build_hasher();
                h.write_u64(0x6b61_666b_615f_6a65);
                h.finish()
            });
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            s.set(Some(x));
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        })
    }
}

impl rand_core_06::RngCore for SeededRng {
    fn next_u32(&mut self) -> u32 {
        (self.next() >> 32) as u32
    }
    fn next_u64(&mut self) -> u64 {
        self.next()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core_06::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

/// openraft's runtime: tokio's (same spawn, sleep, timeout and oneshot), with
/// [`SeededRng`] for election timeouts.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RaftRuntime;

impl AsyncRuntime for RaftRuntime {
    type JoinError = tokio::task::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = tokio::task::JoinHandle<T>;
    type Sleep = tokio::time::Sleep;
    type Instant = TokioInstant;
    type TimeoutError = tokio::time::error::Elapsed;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = tokio::time::Timeout<T>;
    type ThreadLocalRng = SeededRng;
    type OneshotSender<T: OptionalSend> = TokioOneShotSender<T>;
    type OneshotReceiver<T: OptionalSend> = tokio::sync::oneshot::Receiver<T>;
    type OneshotReceiverError = tokio::sync::oneshot::error::RecvError;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        tokio::task::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        tokio::time::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        tokio::time::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        tokio::time::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        tokio::time::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        join_error.is_panic()
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        SeededRng
    }

    fn oneshot<T>() -> (Self::OneshotSender<T>, Self::OneshotReceiver<T>)
    where
        T: OptionalSend,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (TokioOneShotSender(tx), rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core_06::RngCore;

    #[test]
    fn seeded_rng_spreads_values() {
        let mut r = SeededRng;
        let a = r.next_u64();
        let b = r.next_u64();
        assert_ne!(a, b);
        let mut buf = [0u8; 13];
        r.fill_bytes(&mut buf);
        assert!(buf.iter().any(|b| *b != 0));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn spawn_blocking_runs_inline_on_a_simulated_thread() {
        set_simulated(true);
        let here = std::thread::current().id();
        let there = spawn_blocking(move || std::thread::current().id())
            .await
            .expect("join");
        set_simulated(false);
        assert_eq!(here, there);
        let elsewhere = spawn_blocking(move || std::thread::current().id())
            .await
            .expect("join");
        assert_ne!(here, elsewhere);
    }
}
