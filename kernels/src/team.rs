//! A team of spinning threads for the short parallel loops of a decode step.
//!
//! A one-token step runs a few hundred products of tens to hundreds of microseconds each. Handing
//! each to rayon costs a wake-up of a sleeping worker and its yields afterwards (~9% of SmolLM2's
//! decode on two cores). A team's workers spin on an epoch counter between loops, as llama.cpp's
//! threadpool does, and fall asleep only after [`SPIN`] without work, so a loop costs a few
//! atomic operations.
//!
//! One team per thread count (the calling rayon pool's), created on first use and kept for the
//! life of the process. A loop started while the team is busy (another model's step, or a loop
//! inside a task) runs on rayon instead, so nesting and concurrent callers never wait on it.
//!
//! The one `unsafe` outside [`simd`](crate::simd): workers call a closure that lives on the
//! caller's stack, which [`run`] keeps alive until every task it handed out has finished.

use rayon::prelude::*;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering::SeqCst};
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
    busy: AtomicBool,
    /// `epoch << 32 | next task`: a claim names the loop it is for, so a worker that is late
    /// for one loop can never take a task of the next.
    state: AtomicU64,
    /// Tasks of the current loop.
    n_tasks: AtomicU32,
    /// The current loop's closure, valid while its tasks are claimed.
    job: AtomicPtr<Job<'static>>,
    /// Tasks of the current loop that have finished.
    done: AtomicUsize,
    /// A task of the current loop panicked on a worker.
    panicked: AtomicBool,
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
}

fn epoch(state: u64) -> u32 {
    (state >> 32) as u32
}

impl Team {
    /// Claims the next task of loop `epoch` with `n` tasks; `None` once they are all claimed or
    /// the loop is over.
    fn claim(&self, ep: u32, n: u32) -> Option<usize> {
        let mut v = self.state.load(SeqCst);
        loop {
            let next = v as u32;
            if epoch(v) != ep || next >= n {
                return None;
            }
            match self.state.compare_exchange_weak(v, v + 1, SeqCst, SeqCst) {
                Ok(_) => return Some(next as usize),
                Err(now) => v = now,
            }
        }
    }

    /// Runs the tasks of loop `ep` this thread can claim.
    fn work(&self, ep: u32) {
        let n = self.n_tasks.load(SeqCst);
        let job = self.job.load(SeqCst);
        while let Some(i) = self.claim(ep, n) {
            // SAFETY: a claim for `ep` succeeded, so `ep`'s loop is still running: `run` stores
            // `job` and `n_tasks` before it opens the epoch and returns only after every claimed
            // task has finished (`done`), and the job lives on its stack until then. The values
            // read above are `ep`'s: the next loop writes them only after all of `ep`'s tasks
            // were claimed, after which no claim for `ep` succeeds.
            let f = unsafe { (*job).f };
            if catch_unwind(AssertUnwindSafe(|| f(i))).is_err() {
                self.panicked.store(true, SeqCst);
            }
            self.done.fetch_add(1, SeqCst);
        }
    }

    fn worker(&'static self) {
        let mut seen = 0u32;
        loop {
            let start = Instant::now();
            let mut spins = 0u32;
            loop {
                if epoch(self.state.load(SeqCst)) != seen {
                    break;
                }
                spins = spins.wrapping_add(1);
                if !spins.is_multiple_of(1024) || start.elapsed() < SPIN {
                    std::hint::spin_loop();
                    continue;
                }
                let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
                self.sleepers.fetch_add(1, SeqCst);
                while epoch(self.state.load(SeqCst)) == seen {
                    guard = self.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
                }
                self.sleepers.fetch_sub(1, SeqCst);
                break;
            }
            seen = epoch(self.state.load(SeqCst));
            self.work(seen);
        }
    }

    fn run(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        let job = Job { f };
        self.done.store(0, SeqCst);
        self.panicked.store(false, SeqCst);
        self.n_tasks.store(n as u32, SeqCst);
        self.job.store(&job as *const Job as *mut Job<'static>, SeqCst);
        let ep = epoch(self.state.load(SeqCst)).wrapping_add(1);
        self.state.store(u64::from(ep) << 32, SeqCst);
        if self.sleepers.load(SeqCst) > 0 {
            let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.wake.notify_all();
        }
        // The caller's own tasks: a panic is held until the workers are done with `job`.
        let mut caught = None;
        while let Some(i) = self.claim(ep, n as u32) {
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(i))) {
                caught = Some(p);
            }
            self.done.fetch_add(1, SeqCst);
        }
        while self.done.load(SeqCst) < n {
            std::hint::spin_loop();
        }
        if let Some(p) = caught {
            resume_unwind(p);
        }
        if self.panicked.load(SeqCst) {
            panic!("a task of a parallel loop panicked on a team thread");
        }
    }
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
                busy: AtomicBool::new(false),
                state: AtomicU64::new(0),
                n_tasks: AtomicU32::new(0),
                job: AtomicPtr::new(std::ptr::null_mut()),
                done: AtomicUsize::new(0),
                panicked: AtomicBool::new(false),
                sleepers: AtomicUsize::new(0),
                lock: Mutex::new(()),
                wake: Condvar::new(),
            }));
            for i in 0..threads - 1 {
                let spawned = std::thread::Builder::new()
                    .name(format!("ferro-team-{threads}-{i}"))
                    .spawn(move || t.worker());
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
    let threads = rayon::current_num_threads();
    if n <= 1 || threads <= 1 || n > u32::MAX as usize {
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

/// Splits `data` into runs of `chunk` items and runs `f(index of the run's first item, run)` on
/// each, in parallel on the calling rayon pool's number of threads: on the pool's thread team
/// (workers that spin between loops, for the many short loops of a decode step) when it is
/// free, else on rayon.
pub fn for_each_chunk<T: Send>(data: &mut [T], chunk: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    let chunk = chunk.max(1);
    let runs: Vec<Mutex<&mut [T]>> = data.chunks_mut(chunk).map(Mutex::new).collect();
    for_each(runs.len(), &|i| {
        let mut run = runs[i].lock().unwrap_or_else(|e| e.into_inner());
        f(i * chunk, &mut run)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap()
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
