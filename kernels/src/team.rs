//! A team of spinning threads for the short parallel loops of a decode step.
//!
//! A one-token step runs a few hundred products of tens to hundreds of microseconds each. Handing
//! each to rayon costs a wake-up of a sleeping worker and its yields afterwards (~9% of SmolLM2's
//! decode on two cores). A team's workers spin on an epoch counter between loops, as llama.cpp's
//! threadpool does, and fall asleep only after [`SPIN`] without work, so a loop costs a few
//! atomic operations.
//!
//! Each thread owns a contiguous range of a loop's tasks and runs it front to back; a thread
//! that has run out takes tasks from the back of another's range. So the row chunks of a
//! product stream through each thread in memory order (its prefetches run on into its own next
//! chunk), while the loop still balances at its end. (Handing out tasks in index order from one
//! counter interleaves the threads' chunks: on SmolLM2's small matrices each thread then
//! restarted its stream every 20-40 KB.)
//!
//! An idle thread is not idle for the memory: while it waits (its range done, or the caller
//! running the serial work between two products) it prefetches its share of the product the
//! step runs next, which the team learns from the order of the last step's products
//! ([`product_starts`]).
//!
//! One team per thread count (the calling rayon pool's), created on first use and kept for the
//! life of the process. A loop started while the team is busy (another model's step, or a loop
//! inside a task) runs on rayon instead, so nesting and concurrent callers never wait on it.
//!
//! The one `unsafe` outside [`simd`](crate::simd): workers call a closure that lives on the
//! caller's stack, which [`run`] keeps alive until every task it handed out has finished.

use rayon::prelude::*;
use std::collections::HashMap;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
    Ordering::SeqCst,
};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long an idle worker spins before it sleeps: longer than the gap between two loops of a
/// step or two steps of a generation, short enough that an idle server's threads go quiet.
const SPIN: Duration = Duration::from_millis(2);

/// The loop a team runs: task indices `0..n` go to whichever thread claims them first.
struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
}

struct Team {
    /// Threads besides the caller.
    workers: usize,
    /// One loop at a time.
    busy: Line<AtomicBool>,
    /// What the caller posts for a loop, on one cache line that only it writes.
    post: Line<Post>,
    /// Per thread (the caller first), each on its own cache line: `epoch << 32 | front << 16 |
    /// back`, the tasks `front..back` of its range not yet claimed. A claim names the loop it is
    /// for, so a worker that is late for one loop can never take a task of the next.
    ranges: Vec<Line<AtomicU64>>,
    /// Per worker (index 0, the caller's, unused), on a line only that worker writes:
    /// `epoch << 32 | count`, how many tasks of loop `epoch` it has finished.
    finished: Vec<Line<AtomicU64>>,
    /// A task of the current loop panicked on a worker.
    panicked: AtomicBool,
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
    /// The weights of the product expected next, whose share idle threads pull into their
    /// caches: see [`product_starts`].
    warm: Line<WarmHint>,
    order: Mutex<Order>,
}

/// A value alone on its cache line (two lines: the adjacent-line prefetcher fetches pairs), so
/// that threads writing different ones never pass a line back and forth.
#[repr(align(128))]
#[derive(Default)]
struct Line<T>(T);

impl<T> std::ops::Deref for Line<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// A loop as the caller posts it: the workers watch `epoch`, whose store publishes `job`.
#[derive(Default)]
struct Post {
    /// The current loop's epoch.
    epoch: AtomicU32,
    /// The current loop's closure, valid while its tasks are claimed.
    job: AtomicPtr<Job<'static>>,
}

/// The address and length of the weights of the product expected next; `gen` counts the
/// changes.
#[derive(Default)]
struct WarmHint {
    gen: AtomicU64,
    addr: AtomicUsize,
    len: AtomicUsize,
}

/// The order of a step's products, learned as they run: each product's weights (by address)
/// and the weights of the one that followed it.
#[derive(Default)]
struct Order {
    next: HashMap<usize, (usize, usize)>,
    last: usize,
}

/// Products remembered at most (a few hundred per model); past this the map starts over.
const MAX_ORDER: usize = 1 << 14;

/// Bytes of the next product's weights each idle thread pulls into its cache: its own share,
/// up to this many (`FERRO_WARM_KB`, 0 = none).
fn warm_cap() -> usize {
    static CAP: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CAP.get_or_init(|| {
        std::env::var("FERRO_WARM_KB")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .map_or(256 << 10, |kb| kb << 10)
    })
}

/// A thread's progress through its share of the expected product's weights.
#[derive(Default)]
struct Warm {
    gen: u64,
    next: usize,
    end: usize,
}

impl Warm {
    /// Prefetches the next cache line of thread `me`'s share of the expected product (where
    /// its range of the product's row chunks lies, as [`Team::run`] hands them out); false
    /// once its share, up to [`warm_cap`], is done.
    fn step(&mut self, t: &Team, me: usize) -> bool {
        let gen = t.warm.gen.load(Relaxed);
        if gen != self.gen {
            // The address and length may be a moment older or newer than `gen`: they are only
            // hints, and a prefetch of any address is harmless.
            self.gen = gen;
            let share = t.warm.len.load(Relaxed) / t.ranges.len();
            self.next = (t.warm.addr.load(Relaxed) + me * share) & !63;
            self.end = self.next + share.min(warm_cap());
        }
        if self.next >= self.end {
            return false;
        }
        crate::simd::prefetch_l2(self.next);
        self.next += 64;
        true
    }
}

/// Most tasks a loop can have on a team (a range's bounds are 16 bits); larger loops run on
/// rayon.
const MAX_TASKS: usize = u16::MAX as usize;

fn pack(ep: u32, front: usize, back: usize) -> u64 {
    (u64::from(ep) << 32) | ((front as u64) << 16) | back as u64
}

fn unpack(v: u64) -> (u32, usize, usize) {
    ((v >> 32) as u32, (v >> 16) as usize & 0xFFFF, v as usize & 0xFFFF)
}

impl Team {
    /// Claims a task of loop `ep` for thread `me`: the front of its own range, else the back
    /// of another's; `None` once they are all claimed or the loop is over.
    fn claim(&self, ep: u32, me: usize) -> Option<usize> {
        let threads = self.ranges.len();
        for k in 0..threads {
            let (r, own) = ((me + k) % threads, k == 0);
            let range = &self.ranges[r];
            let mut v = range.load(SeqCst);
            loop {
                let (e, front, back) = unpack(v);
                if e != ep {
                    return None;
                }
                if front >= back {
                    break;
                }
                let (next, task) = if own {
                    (pack(ep, front + 1, back), front)
                } else {
                    (pack(ep, front, back - 1), back - 1)
                };
                match range.compare_exchange_weak(v, next, SeqCst, SeqCst) {
                    Ok(_) => return Some(task),
                    Err(now) => v = now,
                }
            }
        }
        None
    }

    /// Runs the tasks of loop `ep` worker `me` can claim.
    fn work(&self, ep: u32, me: usize) {
        let job = self.post.job.load(Acquire);
        let mut count = 0u32;
        while let Some(i) = self.claim(ep, me) {
            // SAFETY: a claim for `ep` succeeded, so `ep`'s loop is still running: `run` stores
            // `job` before the Release store that opens the epoch (which this worker saw with
            // an Acquire load) and returns only after every claimed task has finished
            // (`finished`), and the job lives on its stack until then. The value read above is
            // `ep`'s: the next loop writes it only after all of `ep`'s tasks were claimed, after
            // which no claim for `ep` succeeds.
            let f = unsafe { (*job).f };
            if catch_unwind(AssertUnwindSafe(|| f(i))).is_err() {
                self.panicked.store(true, SeqCst);
            }
            count += 1;
            // Publishes the task's writes to the caller, which reads this count with Acquire.
            self.finished[me].store(u64::from(ep) << 32 | u64::from(count), Release);
        }
    }

    fn wake_all(&self) {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.wake.notify_all();
    }

    /// Tasks of loop `ep` the workers have finished.
    fn finished(&self, ep: u32) -> usize {
        let count = |v: u64| if (v >> 32) as u32 == ep { v as u32 as usize } else { 0 };
        self.finished[1..].iter().map(|f| count(f.load(Acquire))).sum()
    }

    /// Worker `me` (1..): runs its share of each loop as its epoch opens.
    fn worker(&'static self, me: usize) {
        let mut seen = 0u32;
        let mut warm = Warm::default();
        loop {
            let start = Instant::now();
            let mut spins = 0u32;
            loop {
                if self.post.epoch.load(Acquire) != seen {
                    break;
                }
                if warm.step(self, me) {
                    continue;
                }
                spins = spins.wrapping_add(1);
                if !spins.is_multiple_of(1024) || start.elapsed() < SPIN {
                    std::hint::spin_loop();
                    continue;
                }
                let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
                self.sleepers.fetch_add(1, SeqCst);
                while self.post.epoch.load(SeqCst) == seen {
                    guard = self.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
                }
                self.sleepers.fetch_sub(1, SeqCst);
                break;
            }
            seen = self.post.epoch.load(Acquire);
            self.work(seen, me);
        }
    }

    fn run(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        // The posting stores are plain ones (no store here waits for its cache line): the
        // epoch's Release store publishes the job and the ranges to the workers that see it.
        let job = Job { f };
        self.post.job.store(&job as *const Job as *mut Job<'static>, Relaxed);
        let ep = self.post.epoch.load(Relaxed).wrapping_add(1);
        // Thread k's range: tasks k·n/T .. (k+1)·n/T. The caller's first task is its own
        // already (it starts it without a claim); its range is the rest.
        let t = self.ranges.len();
        let first = (n / t > 0).then_some(0);
        for (k, r) in self.ranges.iter().enumerate() {
            let front = k * n / t + usize::from(k == 0 && first.is_some());
            r.store(pack(ep, front, (k + 1) * n / t), Relaxed);
        }
        self.post.epoch.store(ep, Release);
        // Workers asleep since long before this loop are woken now; one that fell asleep just
        // now, after the check below.
        if self.sleepers.load(Relaxed) > 0 {
            self.wake_all();
        }
        // The caller's own tasks: a panic is held until the workers are done with `job`.
        let mut caught = None;
        let mut done = 0;
        for i in first.into_iter().chain(std::iter::from_fn(|| self.claim(ep, 0))) {
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(i))) {
                caught = Some(p);
            }
            done += 1;
        }
        // A worker that fell asleep around the epoch's store is woken here. The fence orders
        // that store before this load of `sleepers`, as a worker's increment of `sleepers`
        // comes before its load of the epoch: one of the two sees the other.
        std::sync::atomic::fence(SeqCst);
        if self.sleepers.load(Relaxed) > 0 {
            self.wake_all();
        }
        let mut warm = Warm::default();
        while done + self.finished(ep) < n {
            if !warm.step(self, 0) {
                std::hint::spin_loop();
            }
        }
        if let Some(p) = caught {
            resume_unwind(p);
        }
        if self.panicked.load(Relaxed) {
            self.panicked.store(false, Relaxed);
            panic!("a task of a parallel loop panicked on a team thread");
        }
    }
}

thread_local! {
    /// The thread count [`with_threads`] sets for the calling thread's loops (0: none set).
    static THREADS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// How many threads the calling thread's parallel loops use: the count of the [`with_threads`]
/// around it, else its rayon pool's.
pub fn threads() -> usize {
    match THREADS.with(|t| t.get()) {
        0 => rayon::current_num_threads(),
        n => n,
    }
}

/// Runs `f` on the calling thread with its loops sized for `threads` threads: the team's loops
/// run on the team of that many threads, as they would inside a rayon pool of that size, without
/// handing `f` to such a pool's thread first. (A decode step handed to a pool's thread cost
/// ~3% of SmolLM2's decode: the pool's idle threads spin and yield beside the team's, and the
/// step's threads were preempted ten times as often.) Loops that fall back to rayon run on the
/// calling thread's pool.
pub fn with_threads<R>(threads: usize, f: impl FnOnce() -> R) -> R {
    struct Restore(usize);
    impl Drop for Restore {
        fn drop(&mut self) {
            THREADS.with(|t| t.set(self.0));
        }
    }
    let _restore = Restore(THREADS.with(|t| t.replace(threads.max(1))));
    f()
}

/// The team for `threads` threads (the caller and `threads - 1` workers), started on first use.
fn team(threads: usize) -> Option<&'static Team> {
    static TEAMS: Mutex<Vec<&'static Team>> = Mutex::new(Vec::new());
    thread_local! {
        static LAST: std::cell::Cell<Option<&'static Team>> = const { std::cell::Cell::new(None) };
    }
    if let Some(t) = LAST.with(|c| c.get()).filter(|t| t.workers + 1 == threads) {
        return Some(t);
    }
    let mut teams = TEAMS.lock().unwrap_or_else(|e| e.into_inner());
    let t = match teams.iter().find(|t| t.workers + 1 == threads) {
        Some(t) => *t,
        None => {
            let t: &'static Team = Box::leak(Box::new(Team {
                workers: threads - 1,
                busy: Line::default(),
                post: Line::default(),
                ranges: (0..threads).map(|_| Line::default()).collect(),
                finished: (0..threads).map(|_| Line::default()).collect(),
                panicked: AtomicBool::new(false),
                sleepers: AtomicUsize::new(0),
                lock: Mutex::new(()),
                wake: Condvar::new(),
                warm: Line::default(),
                order: Mutex::new(Order::default()),
            }));
            for i in 0..threads - 1 {
                let spawned = std::thread::Builder::new()
                    .name(format!("ferro-team-{threads}-{i}"))
                    .spawn(move || t.worker(i + 1));
                if spawned.is_err() {
                    // Without all its threads the team would still finish every loop (the
                    // caller claims what is left), but slower than rayon: keep using rayon.
                    t.busy.store(true, SeqCst);
                    break;
                }
            }
            teams.push(t);
            t
        }
    };
    LAST.with(|c| c.set(Some(t)));
    Some(t)
}

/// Runs `f(i)` for every `i` in `0..n`, on the calling rayon pool's number of threads: on its
/// team when that is free, else as a rayon loop.
pub(crate) fn for_each(n: usize, f: &(dyn Fn(usize) + Sync)) {
    let threads = threads();
    if n <= 1 || threads <= 1 || n > MAX_TASKS {
        return (0..n).for_each(f);
    }
    match team(threads) {
        Some(t) if !t.busy.swap(true, SeqCst) => {
            struct Free<'a>(&'a AtomicBool);
            impl Drop for Free<'_> {
                fn drop(&mut self) {
                    self.0.store(false, SeqCst);
                }
            }
            let _free = Free(&t.busy);
            t.run(n, f)
        }
        _ => (0..n).into_par_iter().for_each(f),
    }
}

/// Tells the team of the calling pool that a one-token product over `weights` starts: it learns
/// which product follows which (a decode step runs the same products in the same order every
/// token), and its threads, when idle (at the end of a loop, while the caller runs the serial
/// work between loops), pull their shares of the product expected next into their caches, so
/// the memory is never idle between products.
pub(crate) fn product_starts(weights: &[u8]) {
    let threads = threads();
    if threads <= 1 || warm_cap() == 0 {
        return;
    }
    let Some(t) = team(threads) else { return };
    let key = weights.as_ptr() as usize;
    let mut order = t.order.lock().unwrap_or_else(|e| e.into_inner());
    if order.next.len() >= MAX_ORDER {
        order.next.clear();
    }
    let last = std::mem::replace(&mut order.last, key);
    if last != 0 && last != key {
        order.next.insert(last, (key, weights.len()));
    }
    if let Some(&(addr, len)) = order.next.get(&key) {
        // Plain stores (a hint: two callers at once may lose one's change).
        t.warm.addr.store(addr, Relaxed);
        t.warm.len.store(len, Relaxed);
        t.warm.gen.store(t.warm.gen.load(Relaxed).wrapping_add(1), Relaxed);
    }
}

/// Splits `data` into runs of `chunk` items and runs `f(index of the run's first item, run)` on
/// each, in parallel on the calling rayon pool's number of threads: on the pool's thread team
/// (workers that spin between loops, for the many short loops of a decode step) when it is
/// free, else on rayon.
pub fn for_each_chunk<T: Send>(data: &mut [T], chunk: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    let chunk = chunk.max(1);
    let runs = data
        .chunks_mut(chunk)
        .enumerate()
        .map(|(i, run)| (i * chunk, Mutex::new(run)));
    for_each_slice(runs.collect(), f)
}

/// Splits `data` into consecutive runs of the given lengths (which must add up to at most its
/// length; what is left is not visited) and runs `f(index of the run's first item, run)` on
/// each, as [`for_each_chunk`] does.
pub fn for_each_run<T: Send>(data: &mut [T], lens: &[usize], f: impl Fn(usize, &mut [T]) + Sync) {
    let mut runs = Vec::with_capacity(lens.len());
    let mut rest = data;
    let mut start = 0;
    for &len in lens {
        let (run, tail) = rest.split_at_mut(len.min(rest.len()));
        start += run.len();
        runs.push((start - run.len(), Mutex::new(run)));
        rest = tail;
    }
    for_each_slice(runs, f)
}

/// `f(start, run)` for every `(start, run)` of `runs` (disjoint parts of one slice, each behind
/// a lock that only its own task takes), in parallel: the body of [`for_each_chunk`] and
/// [`for_each_run`].
fn for_each_slice<T: Send>(runs: Vec<(usize, Mutex<&mut [T]>)>, f: impl Fn(usize, &mut [T]) + Sync) {
    for_each(runs.len(), &|i| {
        let (start, run) = &runs[i];
        let mut run = run.lock().unwrap_or_else(|e| e.into_inner());
        f(*start, &mut run)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap()
    }

    #[test]
    fn with_threads_sizes_the_callers_loops_and_restores() {
        let outer = threads();
        assert_eq!(outer, rayon::current_num_threads());
        with_threads(3, || {
            assert_eq!(threads(), 3);
            with_threads(0, || assert_eq!(threads(), 1, "0 threads means one"));
            assert_eq!(threads(), 3);
            // A loop under it runs every task once.
            let hits: Vec<AtomicUsize> = (0..40).map(|_| AtomicUsize::new(0)).collect();
            for_each(hits.len(), &|i| {
                hits[i].fetch_add(1, SeqCst);
            });
            assert!(hits.iter().all(|h| h.load(SeqCst) == 1));
        });
        assert_eq!(threads(), outer);
        // Restored when the closure panics.
        let r = catch_unwind(|| with_threads(5, || panic!("inside")));
        assert!(r.is_err());
        assert_eq!(threads(), outer);
    }

    #[test]
    fn every_task_runs_once() {
        for threads in [1, 2, 3] {
            pool(threads).install(|| {
                for n in [0, 1, 2, 5, 64] {
                    for _ in 0..200 {
                        let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                        for_each(n, &|i| {
                            hits[i].fetch_add(1, SeqCst);
                        });
                        assert!(hits.iter().all(|h| h.load(SeqCst) == 1), "threads {threads} n {n}");
                    }
                }
            });
        }
    }

    /// Each thread runs its own range front to back (thread k of T: tasks k·n/T..(k+1)·n/T),
    /// then takes what is left from the back of the others': an ascending run from its range's
    /// start, then descending runs outside it. (Four threads, a count no other test here uses;
    /// a loop that still found the team busy ran on rayon and is not checked.)
    #[test]
    fn threads_run_their_own_ranges_in_order() {
        const T: usize = 4;
        pool(T).install(|| {
            for n in [2, 5, 16, 64] {
                let mut checked = 0;
                for _ in 0..200 {
                    // Thread k: 0 the caller, k the worker named ferro-team-T-{k-1}.
                    let order = Mutex::new(Vec::new());
                    let caller = std::thread::current().id();
                    for_each(n, &|i| {
                        let me = std::thread::current();
                        let k = match me.name().and_then(|s| s.strip_prefix("ferro-team-4-")) {
                            Some(w) => w.parse::<usize>().ok().map(|w| w + 1),
                            None => (me.id() == caller).then_some(0),
                        };
                        order.lock().unwrap().push((k, i));
                        std::hint::black_box((0..200).sum::<u32>());
                    });
                    let Some(order) = order
                        .into_inner()
                        .unwrap()
                        .into_iter()
                        .map(|(k, i)| Some((k?, i)))
                        .collect::<Option<Vec<_>>>()
                    else {
                        continue;
                    };
                    checked += 1;
                    // The range that item i belongs to.
                    let owner = |i: usize| (0..T).find(|&k| (k * n / T..(k + 1) * n / T).contains(&i));
                    for k in 0..T {
                        let range = k * n / T..(k + 1) * n / T;
                        let mine: Vec<usize> = order.iter().filter(|o| o.0 == k).map(|o| o.1).collect();
                        let own = mine.iter().take(range.len()).enumerate();
                        let own = own.take_while(|&(j, &i)| i == range.start + j).count();
                        let stolen = &mine[own..];
                        // Steals from one range are consecutive, descending.
                        let ok = stolen.iter().all(|i| !range.contains(i))
                            && stolen.windows(2).all(|w| w[1] < w[0] || owner(w[1]) != owner(w[0]));
                        assert!(ok, "n {n}, thread {k}: {mine:?}");
                    }
                }
                assert!(checked > 0, "n {n}: no loop ran on the team");
            }
        });
    }

    /// The team learns which product follows which and points its idle threads at the one
    /// expected next. (Five threads, a count no other test here uses.)
    #[test]
    fn the_next_product_is_the_one_that_followed_last_time() {
        pool(5).install(|| {
            let (a, b, c) = (vec![0u8; 4096], vec![1u8; 8192], vec![2u8; 100]);
            let t = team(5).unwrap();
            let hint = || (t.warm.addr.load(SeqCst), t.warm.len.load(SeqCst));
            for w in [&a, &b, &c, &a] {
                product_starts(w);
            }
            assert_eq!(hint(), (b.as_ptr() as usize, b.len()), "after a: b");
            product_starts(&b);
            assert_eq!(hint(), (c.as_ptr() as usize, c.len()), "after b: c");
            // A step that now runs a, c: after a comes c.
            product_starts(&c);
            product_starts(&a);
            product_starts(&c);
            product_starts(&a);
            assert_eq!(hint(), (c.as_ptr() as usize, c.len()));
        });
    }

    #[test]
    fn runs_cover_their_lengths() {
        pool(2).install(|| {
            let mut v = vec![0usize; 20];
            for_each_run(&mut v, &[3, 1, 7, 4], |start, run| {
                for (k, x) in run.iter_mut().enumerate() {
                    *x = start + k + 1;
                }
            });
            let want: Vec<usize> = (1..=15).chain([0; 5]).collect();
            assert_eq!(v, want);
        });
    }

    #[test]
    fn chunks_cover_the_slice() {
        pool(2).install(|| {
            let mut v = vec![0usize; 103];
            for_each_chunk(&mut v, 10, |start, run| {
                for (k, x) in run.iter_mut().enumerate() {
                    *x += start + k;
                }
            });
            assert!(v.iter().enumerate().all(|(i, &x)| x == i));
        });
    }

    #[test]
    fn nested_and_concurrent_loops_finish() {
        pool(2).install(|| {
            let total = AtomicUsize::new(0);
            for_each(4, &|_| {
                for_each(3, &|_| {
                    total.fetch_add(1, SeqCst);
                });
            });
            assert_eq!(total.load(SeqCst), 12);
        });
        let total = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    pool(2).install(|| {
                        for _ in 0..100 {
                            for_each(4, &|_| {
                                total.fetch_add(1, SeqCst);
                            });
                        }
                    })
                });
            }
        });
        assert_eq!(total.load(SeqCst), 1200);
    }

    #[test]
    fn a_panicking_task_reaches_the_caller_and_the_team_goes_on() {
        pool(2).install(|| {
            for bad in [0, 1] {
                let r = catch_unwind(|| for_each(2, &|i| assert_ne!(i, bad, "task {i}")));
                assert!(r.is_err());
            }
            let total = AtomicUsize::new(0);
            for_each(8, &|_| {
                total.fetch_add(1, SeqCst);
            });
            assert_eq!(total.load(SeqCst), 8);
        });
    }

    /// Two tasks that each wait for the other to start: they finish only when a worker, asleep
    /// after a long pause, runs one of them beside the caller. (A thread count of its own: no
    /// other test's loops keep this team's workers awake.)
    #[test]
    fn sleeping_workers_wake() {
        pool(7).install(|| {
            for pause in [Duration::ZERO, SPIN * 3] {
                std::thread::sleep(pause);
                let arrived = AtomicUsize::new(0);
                let met = AtomicUsize::new(0);
                for_each(2, &|_| {
                    arrived.fetch_add(1, SeqCst);
                    let start = Instant::now();
                    while arrived.load(SeqCst) < 2 && start.elapsed() < Duration::from_secs(10) {
                        std::hint::spin_loop();
                    }
                    if arrived.load(SeqCst) == 2 {
                        met.fetch_add(1, SeqCst);
                    }
                });
                assert_eq!(met.load(SeqCst), 2, "after a pause of {pause:?}");
            }
        });
    }
}
