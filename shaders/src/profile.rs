//! `FERRO_GPU_PROFILE=1` (measurement only): every recorded batch runs each dispatch in its own
//! compute pass with GPU timestamps at its start and end, and every 64 batches the GPU time per
//! kind of op ([`crate::context::Op`]'s kind) is printed to stderr, so shader work can be told
//! apart from dispatch overhead. Needs the adapter's `TIMESTAMP_QUERY`; slower than a normal run.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

use crate::context::GpuContext;
use crate::error::Result;

/// Dispatches timed per batch (two timestamps each; wgpu allows 4096 queries per set).
pub(crate) const MAX_TIMED: usize = 2048;

pub(crate) fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("FERRO_GPU_PROFILE").is_ok_and(|v| v == "1"))
}

/// Timestamp queries of one batch.
pub(crate) struct Timer {
    pub(crate) set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    read: wgpu::Buffer,
    pub(crate) kinds: Vec<(&'static str, u32)>,
}

impl Timer {
    pub(crate) fn new(ctx: &GpuContext) -> Self {
        let n = (2 * MAX_TIMED) as u32;
        let bytes = 8 * n as u64;
        Self {
            set: ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("profile"),
                ty: wgpu::QueryType::Timestamp,
                count: n,
            }),
            resolve: ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("profile resolve"),
                size: bytes,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            }),
            read: ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("profile read"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            kinds: Vec::new(),
        }
    }

    /// Reads the timestamps back (waits for the GPU) and adds them to the totals.
    pub(crate) fn finish(self, ctx: &GpuContext) -> Result<()> {
        let n = self.kinds.len() as u32;
        if n == 0 {
            return Ok(());
        }
        let bytes = 16 * n as u64;
        let mut enc = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        enc.resolve_query_set(&self.set, 0..2 * n, &self.resolve, 0);
        enc.copy_buffer_to_buffer(&self.resolve, 0, &self.read, 0, bytes);
        ctx.queue.submit([enc.finish()]);
        let ticks: Vec<u64> = ctx.map_read(&self.read, bytes)?;
        let ns_per_tick = ctx.queue.get_timestamp_period() as f64;
        let mut totals = TOTALS.lock().unwrap_or_else(|p| p.into_inner());
        for (i, kind) in self.kinds.iter().enumerate() {
            let ns = ticks[2 * i + 1].saturating_sub(ticks[2 * i]) as f64 * ns_per_tick;
            let e = totals.by_kind.entry(*kind).or_default();
            e.0 += ns;
            e.1 += 1;
        }
        totals.batches += 1;
        if totals.batches == 64 {
            let all: f64 = totals.by_kind.values().map(|v| v.0).sum();
            let mut line = format!("gpu profile (mean of 64 batches, us): total {:.0}", all / 64e3);
            for (kind, (ns, count)) in &totals.by_kind {
                let kind = match kind {
                    (k, 0) => k.to_string(),
                    (k, rows) => format!("{k}[{rows}]"),
                };
                line += &format!(
                    ", {kind} {:.0} ({} x {:.1})",
                    ns / 64e3,
                    count / 64,
                    ns / *count as f64 / 1e3
                );
            }
            eprintln!("{line}");
            *totals = Totals::default();
        }
        Ok(())
    }
}

#[derive(Default)]
struct Totals {
    batches: usize,
    by_kind: BTreeMap<(&'static str, u32), (f64, usize)>,
}

static TOTALS: Mutex<Totals> = Mutex::new(Totals {
    batches: 0,
    by_kind: BTreeMap::new(),
});
