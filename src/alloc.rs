//! Settings of the allocator the `ingest` binary (and `make bench`) runs on:
//! mimalloc, which parses pages of JSON half again as fast as the system
//! allocator (`make bench`).

// The unsafe code of this module is documented at each block (SAFETY).
#![allow(unsafe_code)]

/// `mi_option_purge_delay` in mimalloc.h (v3), which libmimalloc-sys does not
/// name; its default there is 1,000 ms.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Return freed memory to the OS after 10 ms instead of mimalloc v3's one
/// second. Memory a run frees no longer lingers: a 1M-record run peaks at
/// ~25 MB instead of ~33 MB, near a 10k-record run's ~22 MB, for no
/// measurable loss of speed (`make bench`). Call it first thing in `main`.
pub fn tune() {
    // SAFETY: mi_option_get/mi_option_set read and write one of mimalloc's
    // option slots and are safe to call at any time. The option is only set
    // when it still holds purge_delay's documented default, so a renumbered
    // enum in some future mimalloc cannot make this change another option.
    unsafe {
        if libmimalloc_sys::mi_option_get(PURGE_DELAY) == 1000 {
            libmimalloc_sys::mi_option_set(PURGE_DELAY, 10);
        }
    }
}
