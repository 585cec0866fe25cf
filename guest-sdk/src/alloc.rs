//! The guest's heap allocator (feature `allocator`, on by default): the
//! same dlmalloc as Rust's own for `wasm32-unknown-unknown`, but its first
//! region is the free end of the initial memory (from `__heap_base`, past
//! the stack and the static data, to the end of the initial pages) rather
//! than a page from `memory.grow`.
//!
//! Rust's allocator takes every region from `memory.grow`, so a process
//! that allocates anything at all grows its memory past its initial size.
//! When it ends, its pool slot keeps that larger size, and the next
//! instance there (of the initial size again) has the extra page made
//! inaccessible first: an `mprotect` whose TLB flush interrupts every
//! other core running the node (measured: 10,000 processes moved onto a
//! new version, in slots left by processes that had allocated, took 2.4
//! times as long). With this allocator a process grows its memory only
//! when its heap outgrows what the initial pages have left (for a Rust
//! guest, tens of KiB), and it touches no more pages than before.
//!
//! A guest that wants another allocator turns the feature off
//! (`default-features = false`) and sets its own `#[global_allocator]`.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::{Cell, UnsafeCell};

use dlmalloc::Dlmalloc;

/// A wasm page.
const WASM_PAGE: usize = 64 * 1024;
/// How much dlmalloc asks for at least: small, so that its first request
/// fits the end of the initial memory (its default, 64 KiB, rarely does).
/// Regions from `memory.grow` are whole pages whatever it asks.
const GRANULARITY: usize = 4096;

unsafe extern "C" {
    /// Where the linker put the end of the static data: the heap starts here.
    static __heap_base: u8;
    /// The end of the initial memory, as the linker sized it.
    static __heap_end: u8;
}

/// Where dlmalloc's regions come from: the end of the initial memory
/// first, then new pages.
struct Regions {
    /// Whether the end of the initial memory was handed out.
    initial_given: Cell<bool>,
}

impl Regions {
    /// The free end of the initial memory, if `size` bytes fit in it and
    /// it was not handed out yet.
    fn initial(&self, size: usize) -> Option<(usize, usize)> {
        if self.initial_given.get() {
            return None;
        }
        // Only the addresses of the linker's symbols, never what is there.
        let start = (&raw const __heap_base as usize).next_multiple_of(16);
        let end = &raw const __heap_end as usize;
        (end > start && end - start >= size).then_some((start, end - start))
    }
}

// SAFETY: each region is handed out once (the initial one once, each grown
// range once) and never taken back: `free`, `free_part` and `remap` refuse,
// as for Rust's own wasm allocator. Both kinds are zeroed memory no one
// else uses: the initial one lies past everything the linker placed, and
// a fresh instance's memory is zero.
unsafe impl dlmalloc::Allocator for Regions {
    fn alloc(&self, size: usize) -> (*mut u8, usize, u32) {
        if let Some((start, len)) = self.initial(size) {
            self.initial_given.set(true);
            return (start as *mut u8, len, 0);
        }
        let pages = size.div_ceil(WASM_PAGE);
        let before = core::arch::wasm32::memory_grow(0, pages);
        if before == usize::MAX {
            return (std::ptr::null_mut(), 0, 0);
        }
        ((before * WASM_PAGE) as *mut u8, pages * WASM_PAGE, 0)
    }

    fn remap(&self, _ptr: *mut u8, _old: usize, _new: usize, _can_move: bool) -> *mut u8 {
        std::ptr::null_mut()
    }

    fn free_part(&self, _ptr: *mut u8, _old: usize, _new: usize) -> bool {
        false
    }

    fn free(&self, _ptr: *mut u8, _size: usize) -> bool {
        false
    }

    fn can_release_part(&self, _flags: u32) -> bool {
        false
    }

    fn allocates_zeros(&self) -> bool {
        true
    }

    fn page_size(&self) -> usize {
        WASM_PAGE
    }
}

/// The global allocator: dlmalloc over [`Regions`].
struct GuestAlloc(UnsafeCell<Dlmalloc<Regions>>);

// SAFETY: a wasm32 guest runs on one thread, so the allocator is never
// entered twice at once.
unsafe impl Sync for GuestAlloc {}

const fn dlmalloc() -> Dlmalloc<Regions> {
    let mut heap = Dlmalloc::new_with_allocator(Regions {
        initial_given: Cell::new(false),
    });
    assert!(heap.set_granularity(GRANULARITY));
    heap
}

#[global_allocator]
static ALLOCATOR: GuestAlloc = GuestAlloc(UnsafeCell::new(dlmalloc()));

// SAFETY: each method forwards to dlmalloc with the layout it was given,
// which upholds `GlobalAlloc`'s contract as Rust's own wasm allocator does;
// the `&mut` to the state is unique since the guest has one thread and
// dlmalloc does not call back into the global allocator.
unsafe impl GlobalAlloc for GuestAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl's comment.
        unsafe { (*self.0.get()).malloc(layout.size(), layout.align()) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl's comment.
        unsafe { (*self.0.get()).calloc(layout.size(), layout.align()) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: see the impl's comment.
        unsafe { (*self.0.get()).free(ptr, layout.size(), layout.align()) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: see the impl's comment.
        unsafe { (*self.0.get()).realloc(ptr, layout.size(), layout.align(), new_size) }
    }
}
