//! The process's entropy, fixed by the seed during a simulation. std's `RandomState` (every
//! `HashMap`'s hash keys, hence their iteration order) and tokio's `select!` order are seeded
//! from the OS through libc's `getrandom`; this module defines that symbol in the harness
//! binary, so while [`enable`] is in force the bytes come from a generator seeded by the
//! simulation's seed, and otherwise from the kernel as before (the raw system call). This is
//! madsim's approach (it overrides the same symbol). A simulation runs on a thread started
//! after [`enable`], whose hash keys are drawn then.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

static ENABLED: AtomicBool = AtomicBool::new(false);
static RNG: Mutex<Option<ChaCha8Rng>> = Mutex::new(None);

/// From now on `getrandom` returns bytes drawn from `seed`.
pub fn enable(seed: u64) {
    let mut g = RNG.lock().unwrap_or_else(|p| p.into_inner());
    *g = Some(ChaCha8Rng::seed_from_u64(seed ^ 0x005e_ed0f_e17e_0b1e));
    ENABLED.store(true, Ordering::SeqCst);
}

/// Back to the kernel's entropy.
pub fn disable() {
    ENABLED.store(false, Ordering::SeqCst);
}

/// How many `getrandom` calls the seeded generator answered (to show the override is linked).
pub fn seeded_calls() -> u64 {
    CALLS.load(Ordering::SeqCst)
}

static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// libc's `getrandom(2)` wrapper, overridden: see the module comment.
///
/// # Safety
/// `buf` must be valid for writes of `len` bytes, as for libc's function.
#[no_mangle]
pub unsafe extern "C" fn getrandom(
    buf: *mut libc::c_void,
    len: libc::size_t,
    flags: libc::c_uint,
) -> libc::ssize_t {
    if ENABLED.load(Ordering::SeqCst) {
        let mut g = RNG.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rng) = g.as_mut() {
            // SAFETY: the caller guarantees `buf` is valid for `len` bytes.
            let out = unsafe { std::slice::from_raw_parts_mut(buf as *mut u8, len) };
            rng.fill_bytes(out);
            CALLS.fetch_add(1, Ordering::SeqCst);
            return len as libc::ssize_t;
        }
    }
    // SAFETY: forwards the caller's arguments to the system call unchanged.
    unsafe { libc::syscall(libc::SYS_getrandom, buf, len, flags) as libc::ssize_t }
}
