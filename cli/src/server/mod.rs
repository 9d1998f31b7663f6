//! `ferro serve`: an OpenAI-compatible HTTP server (axum + tokio).
//!
//! Handlers stay thin ([`routes`]): they check a request, tokenize it and hand it to the one
//! engine loop ([`ferro_engine::scheduler`]) that owns the model and batches every running
//! request into each forward step. Every error goes through [`errors::ApiError`].

pub mod errors;
pub mod openai_types;
pub mod routes;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use ferro_engine::chat_template::ChatTemplate;
use ferro_engine::models::ModelOptions;
use ferro_engine::scheduler::{Scheduler, SchedulerConfig};
use ferro_engine::tokenizer::Tokenizer;
use ferro_engine::Forward;
use ferro_gguf::Gguf;

use errors::ApiError;

/// Reported as `system_fingerprint`.
pub const FINGERPRINT: &str = concat!("ferro-", env!("CARGO_PKG_VERSION"));

/// Everything `ferro serve` needs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub model_path: PathBuf,
    pub host: String,
    pub port: u16,
    pub api_key: Option<String>,
    pub n_parallel: usize,
    /// Context per sequence; 0 = the model's default.
    pub n_ctx: usize,
    pub cors: Option<String>,
    pub threads: usize,
    /// Requests that may wait for a slot before the server answers 503.
    pub queue: usize,
    /// Largest request body, bytes.
    pub body_limit: usize,
    /// Where the model runs.
    pub device: crate::commands::DeviceArgs,
}

/// Shared by every handler.
pub struct AppState {
    pub sched: Scheduler,
    pub tok: Arc<Tokenizer>,
    pub template: ChatTemplate,
    pub bos_text: String,
    /// The name clients use for the model (the file's stem).
    pub model_id: String,
    /// Other accepted names (`general.name`).
    pub aliases: Vec<String>,
    pub model_path: String,
    pub n_ctx: usize,
    pub n_parallel: usize,
    /// Where the model runs: "CPU (avx2 kernels)", "GPU: <adapter>".
    pub device: String,
    pub created: u64,
    pub api_key: Option<String>,
    pub cors: Option<HeaderValue>,
    pub body_limit: usize,
}

/// `Authorization: Bearer KEY` on every /v1 route when a key is set.
async fn auth(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(key) = &st.api_key {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        // Compare without an early exit so the time does not tell how much matched.
        let ok = given.is_some_and(|g| {
            g.len() == key.len() && g.bytes().zip(key.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
        });
        if !ok {
            return ApiError::Unauthorized.into_response();
        }
    }
    next.run(req).await
}

/// CORS headers for the one allowed origin, and answers to preflight requests.
async fn cors(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(origin) = st.cors.clone() else {
        return next.run(req).await;
    };
    let mut resp = if req.method() == Method::OPTIONS {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(req).await
    };
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type"),
    );
    resp
}

/// One log line per request.
async fn log(req: Request, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let t0 = Instant::now();
    let resp = next.run(req).await;
    tracing::info!(
        "{method} {path} {} {:.1}ms",
        resp.status().as_u16(),
        t0.elapsed().as_secs_f64() * 1e3
    );
    resp
}

/// Turn axum's own plain-text rejections (405 ...) into OpenAI errors.
async fn json_errors(req: Request, next: Next) -> Response {
    let (method, path) = (req.method().to_string(), req.uri().path().to_string());
    let resp = next.run(req).await;
    if resp.status() == StatusCode::METHOD_NOT_ALLOWED {
        return ApiError::MethodNotAllowed { method, path }.into_response();
    }
    resp
}

pub fn router(st: Arc<AppState>) -> Router {
    let v1 = Router::new()
        .route("/v1/models", get(routes::models))
        .route("/v1/models/{model}", get(routes::model_one))
        .route("/v1/chat/completions", post(routes::chat))
        .route("/v1/completions", post(routes::completions))
        .route("/v1/embeddings", post(routes::embeddings))
        .route_layer(middleware::from_fn_with_state(st.clone(), auth));
    Router::new()
        .merge(v1)
        .route("/health", get(routes::health))
        .route("/metrics", get(routes::metrics))
        .fallback(routes::not_found)
        .layer(DefaultBodyLimit::max(st.body_limit))
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn_with_state(st.clone(), cors))
        .layer(middleware::from_fn(log))
        .with_state(st)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}

/// Load the model and serve until SIGINT/SIGTERM.
pub fn run(cfg: ServerConfig) -> anyhow::Result<()> {
    let opts = ModelOptions {
        n_ctx: cfg.n_ctx,
        threads: cfg.threads,
        // The GPU allocates its KV cache slots at load; the CPU's are resized below.
        n_slots: cfg.n_parallel.max(1),
        ..ModelOptions::default()
    };
    let loading = || format!("loading {}", cfg.model_path.display());
    let gguf = Arc::new(Gguf::open(&cfg.model_path).with_context(loading)?);
    let model = cfg.device.load(gguf.clone(), &opts).with_context(loading)?;
    let device = model.describe();
    tracing::info!("running on {device}");
    let tok = Arc::new(Tokenizer::from_gguf(&gguf).context("reading the tokenizer")?);
    let template = ChatTemplate::from_gguf(&gguf, &tok).context("reading the chat template")?;
    let bos_text = tok
        .bos_id()
        .and_then(|b| tok.token_str(b))
        .map(|s| s.into_owned())
        .unwrap_or_default();
    let model_id = cfg
        .model_path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let aliases = gguf
        .get_str("general.name")
        .map(|s| vec![s.to_string()])
        .unwrap_or_default();
    let n_ctx = model.n_ctx();
    let mut n_parallel = cfg.n_parallel.max(1);
    if n_parallel > model.max_slots() {
        tracing::warn!(
            "the model holds {} KV cache slots: --parallel {n_parallel} reduced to it",
            model.max_slots()
        );
        n_parallel = model.max_slots();
    }
    tracing::info!(
        "model {model_id}: {} layers, context {n_ctx} x {n_parallel} slots, KV cache {} MiB",
        model.hparams().n_layer,
        model.kv_cache_bytes() * n_parallel / (1 << 20)
    );
    let sched = Scheduler::spawn(
        model,
        tok.clone(),
        SchedulerConfig {
            n_parallel,
            queue_capacity: cfg.queue.max(1),
            ..SchedulerConfig::default()
        },
    )
    .context("starting the engine thread")?;
    let n_parallel = sched.n_parallel();
    let cors = match &cfg.cors {
        Some(o) => Some(HeaderValue::from_str(o).context("--cors: not a valid origin")?),
        None => None,
    };
    let st = Arc::new(AppState {
        sched,
        tok,
        template,
        bos_text,
        model_id,
        aliases,
        model_path: cfg.model_path.display().to_string(),
        n_ctx,
        n_parallel,
        device,
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        api_key: cfg.api_key.clone().filter(|k| !k.is_empty()),
        cors,
        body_limit: cfg.body_limit,
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let addr: SocketAddr = format!("{}:{}", cfg.host, cfg.port).parse().or_else(|_| {
            use std::net::ToSocketAddrs;
            (cfg.host.as_str(), cfg.port)
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| anyhow::anyhow!("--host {}: not an address", cfg.host))
        })?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let local = listener.local_addr()?;
        // Tests and scripts read this line to learn the port.
        println!("ferro serve: listening on http://{local}");
        tracing::info!("listening on http://{local}");
        axum::serve(listener, router(st.clone()))
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("serving")?;
        anyhow::Ok(())
    })?;
    drop(rt);
    // The engine finishes what it holds and stops.
    match Arc::try_unwrap(st) {
        Ok(mut st) => st.sched.shutdown(),
        Err(_) => tracing::warn!("requests still hold the engine; exiting"),
    }
    Ok(())
}
