//! A global allocator guard against huge up-front allocations driven by untrusted input.
//!
//! `kafka-protocol` 0.18 decodes an array by calling `Vec::with_capacity(n)` with the element
//! count read off the wire, before decoding a single element (upstream kafka-protocol-rs PRs #152,
//! #161 and #200 propose bounding it; none is released). A 20-byte frame declaring two billion
//! elements asks for hundreds of GiB; the system allocator refuses, and Rust aborts the whole
//! broker. This allocator serves allocations of [`HUGE`] bytes or more from anonymous
//! `MAP_NORESERVE` mappings instead: the kernel hands out address space without committing
//! memory, the decoder fails on the first missing element, and the untouched mapping is unmapped.
//! Resident memory stays bounded by the bytes actually received (frames are capped by
//! `socket.request.max.bytes`). Everything smaller goes to the system allocator unchanged.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations at or above this size use reserve-only mappings.
pub const HUGE: usize = 1 << 30;

/// The broker binary's global allocator; see the module docs.
#[derive(Debug, Default)]
pub struct GuardedAlloc;

unsafe impl GlobalAlloc for GuardedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() < HUGE || layout.align() > 4096 {
            // SAFETY: forwarded unchanged to the system allocator.
            return unsafe { System.alloc(layout) };
        }
        // SAFETY: an anonymous private mapping; page alignment satisfies any align <= 4096.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                layout.size(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            std::ptr::null_mut()
        } else {
            p.cast()
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() < HUGE || layout.align() > 4096 {
            // SAFETY: `ptr` came from `System.alloc` with this layout.
            unsafe { System.dealloc(ptr, layout) };
        } else {
            // SAFETY: `ptr` came from our `mmap` of exactly this size.
            unsafe { libc::munmap(ptr.cast(), layout.size()) };
        }
    }
}
