//! `zmq-proxy-probe`: proves that a running zmq-proxy forwards traffic, by being both ends of it.
//!
//! The probe owns both peers of one pattern (client and worker, publisher and subscriber, pusher
//! and puller), sends `--count` numbered messages through the proxy, and checks that each one
//! arrives exactly once with the bytes it was sent with. With `--capture` it also counts the
//! copies the proxy writes to its capture socket. It prints the counts and exits 0 only when
//! everything sent was received intact; 1 when anything was lost, corrupted, duplicated or late;
//! 2 for bad arguments. It is what the end-to-end suite runs in a Job against a Service.
//!
//! Every message carries `zp-probe <run> <channel><seq> <filler>`: the run id keeps two probes
//! (or real traffic) apart, the channel byte says what a message is for, and the filler is derived
//! from the sequence number so corruption anywhere in the payload is detected.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use tokio::sync::watch;
use tokio::time::{Instant, timeout_at};
use zeromq::{
    DealerSocket, PubSocket, PullSocket, PushSocket, RepSocket, ReqSocket, Socket, SocketOptions,
    SocketRecv, SocketSend, SubSocket, ZmqMessage,
};

/// Requests, on the way to the worker.
const CH_REQUEST: u8 = b'q';
/// Replies: the worker turns a request's `q` into `r`, so a reply proves the worker saw it.
const CH_REPLY: u8 = b'r';
/// Pipeline data.
const CH_PIPELINE: u8 = b'd';
/// Forwarder data on the subscribed topic.
const CH_SUBSCRIBED: u8 = b's';
/// Forwarder data on a topic nobody subscribed to: must never reach the subscriber.
const CH_UNSUBSCRIBED: u8 = b'u';
/// Warm-up traffic sent until a path is proven live; never counted as data.
const CH_WARMUP: u8 = b'w';

/// Warm-ups are resent at this pace: fast enough to keep start-up short, slow enough not to
/// flood a PUB socket that drops while no subscription has arrived yet.
const WARMUP_INTERVAL: Duration = Duration::from_millis(50);
/// Upper bound on warm-up messages, on top of the deadline, so the loop is bounded in count too.
const MAX_WARMUPS: u64 = 2_000;

#[derive(Parser, Debug)]
#[command(
    name = "zmq-proxy-probe",
    version,
    about = "Send numbered messages through a running zmq-proxy and verify every one arrives intact"
)]
struct Args {
    /// Which proxy pattern to exercise.
    #[arg(long, value_enum)]
    pattern: Pattern,
    /// Endpoint of the proxy's frontend: clients, publishers or pushers connect here.
    #[arg(long)]
    frontend: String,
    /// Endpoint of the proxy's backend: workers, subscribers or pullers connect here.
    #[arg(long)]
    backend: String,
    /// Endpoint of the proxy's capture socket; when given, the copies written there are counted.
    #[arg(long)]
    capture: Option<String>,
    /// Socket that reads the capture: SUB for a PUB capture, PULL for PUSH, DEALER for DEALER.
    #[arg(long, value_enum, default_value = "sub")]
    capture_socket: CaptureKind,
    /// Number of data messages (round trips for shared-queue).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    count: u64,
    /// Payload size in bytes; at least large enough for the header.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(48..=1_048_576))]
    size: u64,
    /// Deadline for the whole run, e.g. 30s, 500ms, 2m (a bare number is seconds).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    timeout: Duration,
    /// How far a sender may run ahead of its receivers; bounds what a dropping PUB can lose.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    window: u64,
    /// text: key=value lines; json: one JSON object.
    #[arg(long, value_enum, default_value = "text")]
    output: OutputFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Pattern {
    /// REQ -> frontend (ROUTER) ... backend (DEALER) -> REP worker run by the probe.
    SharedQueue,
    /// PUB -> frontend (XSUB) ... backend (XPUB) -> SUB, with one subscribed and one
    /// unsubscribed topic.
    Forwarder,
    /// PUSH -> frontend (PULL) ... backend (PUSH) -> PULL.
    Pipeline,
}

impl Pattern {
    fn name(self) -> &'static str {
        match self {
            Pattern::SharedQueue => "shared-queue",
            Pattern::Forwarder => "forwarder",
            Pattern::Pipeline => "pipeline",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum CaptureKind {
    Sub,
    Pull,
    Dealer,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum OutputFormat {
    Text,
    Json,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 30s, 500ms, 2m"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(format!("invalid duration unit in {s:?}: use ms, s, m or h")),
    };
    if d.is_zero() {
        return Err("duration must be positive".into());
    }
    Ok(d)
}

/// The payload format, shared by senders (to build) and receivers (to check).
#[derive(Clone)]
struct Codec {
    prefix: Vec<u8>,
    size: usize,
}

impl Codec {
    fn new(run: &str, size: u64) -> Self {
        let prefix = format!("zp-probe {run} ").into_bytes();
        // The CLI range keeps size small enough for usize on every target we build for.
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        Codec { prefix, size }
    }

    fn encode(&self, channel: u8, seq: u64) -> Bytes {
        let mut out = Vec::with_capacity(self.size.max(self.prefix.len() + 12));
        out.extend_from_slice(&self.prefix);
        out.push(channel);
        out.extend_from_slice(format!("{seq:010} ").as_bytes());
        let mut i = 0u64;
        while out.len() < self.size {
            // Filler depends on seq and position, so swapped or shifted bytes do not verify.
            out.push(b'a' + ((seq.wrapping_add(i)) % 26) as u8);
            i += 1;
        }
        Bytes::from(out)
    }

    /// `Some((channel, seq))` for this run's messages (whatever their integrity),
    /// `None` for anything else.
    fn header(&self, frame: &[u8]) -> Option<(u8, u64)> {
        let rest = frame.strip_prefix(self.prefix.as_slice())?;
        let (&channel, rest) = rest.split_first()?;
        let digits = rest.get(..10)?;
        let seq = std::str::from_utf8(digits).ok()?.parse().ok()?;
        Some((channel, seq))
    }

    fn intact(&self, frame: &[u8], channel: u8, seq: u64) -> bool {
        frame == self.encode(channel, seq).as_ref()
    }
}

/// What one receiver saw. `seen` catches duplicates and, through the sender's window,
/// paces senders in front of lossy sockets.
struct Tally {
    expected_channel: u8,
    seen: Vec<bool>,
    received: u64,
    intact: u64,
    corrupted: u64,
    duplicates: u64,
    unexpected: u64,
    foreign: u64,
    /// Shared so a sender can see its warm-ups arrive while the receiver task owns the tally.
    warmups: Arc<AtomicU64>,
    progress: watch::Sender<u64>,
}

impl Tally {
    fn new(expected_channel: u8, count: u64) -> (Self, watch::Receiver<u64>) {
        let (progress, rx) = watch::channel(0);
        let len = usize::try_from(count).unwrap_or(usize::MAX);
        let tally = Tally {
            expected_channel,
            seen: vec![false; len],
            received: 0,
            intact: 0,
            corrupted: 0,
            duplicates: 0,
            unexpected: 0,
            foreign: 0,
            warmups: Arc::new(AtomicU64::new(0)),
            progress,
        };
        (tally, rx)
    }

    fn record(&mut self, codec: &Codec, frame: &[u8]) {
        match codec.header(frame) {
            Some((CH_WARMUP, _)) => {
                self.warmups.fetch_add(1, Ordering::Relaxed);
            }
            Some((ch, seq)) if ch == self.expected_channel => {
                let slot = usize::try_from(seq).ok().and_then(|i| self.seen.get_mut(i));
                match slot {
                    Some(seen) if *seen => self.duplicates += 1,
                    Some(seen) => {
                        *seen = true;
                        self.received += 1;
                        if codec.intact(frame, ch, seq) {
                            self.intact += 1;
                        } else {
                            self.corrupted += 1;
                        }
                    }
                    None => self.unexpected += 1,
                }
                let received = self.received;
                self.progress.send_replace(received);
            }
            Some(_) => self.unexpected += 1,
            // Another run's or a real peer's traffic on a shared proxy: reported, not judged.
            None => self.foreign += 1,
        }
    }
}

/// The capture reader's counts. Data copies are counted per channel; warm-ups only signal
/// that the capture path is live.
#[derive(Default)]
struct CaptureCounts {
    by_channel: HashMap<u8, u64>,
    warmups: u64,
    foreign: u64,
}

impl CaptureCounts {
    fn data(&self, channels: &[u8]) -> u64 {
        channels.iter().map(|c| self.by_channel.get(c).copied().unwrap_or(0)).sum()
    }
}

struct Capture {
    counts: Arc<std::sync::Mutex<CaptureCounts>>,
    /// Bumped on every message of this run, so waiters wake without polling.
    changed: watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
    /// Channels whose copies count as captured data for this pattern.
    data_channels: &'static [u8],
    expected: u64,
}

impl Capture {
    fn data(&self) -> u64 {
        self.counts.lock().map(|c| c.data(self.data_channels)).unwrap_or(0)
    }

    fn warmups(&self) -> u64 {
        self.counts.lock().map(|c| c.warmups).unwrap_or(0)
    }
}

#[derive(Debug, thiserror::Error)]
enum ProbeError {
    #[error("cannot connect {role} to {endpoint}: {source}")]
    Connect { role: &'static str, endpoint: String, source: zeromq::ZmqError },
    #[error("{what}: {source}")]
    Zmq { what: &'static str, source: zeromq::ZmqError },
    #[error("timed out {0}")]
    Timeout(String),
}

fn zmq(what: &'static str) -> impl FnOnce(zeromq::ZmqError) -> ProbeError {
    move |source| ProbeError::Zmq { what, source }
}

struct Run {
    codec: Codec,
    count: u64,
    window: u64,
    deadline: Instant,
}

impl Run {
    fn options(&self) -> SocketOptions {
        let mut options = SocketOptions::default();
        // zeromq's connect waits for the handshake, so its timeout is the run's remaining time.
        options.connect_timeout(
            self.deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1)),
        );
        options
    }

    async fn connect<S: Socket>(
        &self,
        role: &'static str,
        endpoint: &str,
    ) -> Result<S, ProbeError> {
        let mut socket = S::with_options(self.options());
        socket.connect(endpoint).await.map_err(|source| ProbeError::Connect {
            role,
            endpoint: endpoint.to_string(),
            source,
        })?;
        Ok(socket)
    }

    async fn wait_until<T>(
        &self,
        rx: &mut watch::Receiver<T>,
        what: &str,
        mut ok: impl FnMut(&T) -> bool,
    ) -> Result<(), ProbeError> {
        match timeout_at(self.deadline, rx.wait_for(|v| ok(v))).await {
            Ok(Ok(_)) => Ok(()),
            // A closed channel means the receiver task ended early: the counts will say why.
            Ok(Err(_)) => Err(ProbeError::Timeout(format!("{what}: receiver stopped"))),
            Err(_) => Err(ProbeError::Timeout(what.to_string())),
        }
    }
}

/// Outcome of one run, printed as text or JSON.
#[derive(serde::Serialize, Default)]
struct Report {
    pattern: &'static str,
    run: String,
    sent: u64,
    received: u64,
    intact: u64,
    corrupted: u64,
    duplicates: u64,
    unexpected: u64,
    foreign: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    unsubscribed_sent: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    capture_expected: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    captured: Option<u64>,
    elapsed_ms: u128,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    ok: bool,
}

impl Report {
    fn judge(&mut self) {
        let capture_ok = self.capture_expected == self.captured;
        self.ok = self.error.is_none()
            && self.sent > 0
            && self.received == self.sent
            && self.intact == self.sent
            && self.corrupted == 0
            && self.duplicates == 0
            && self.unexpected == 0
            && capture_ok;
    }

    fn print(&self, format: OutputFormat) {
        match format {
            OutputFormat::Json => match serde_json::to_string(self) {
                Ok(line) => println!("{line}"),
                Err(e) => eprintln!("zmq-proxy-probe: error: cannot encode report: {e}"),
            },
            OutputFormat::Text => {
                println!(
                    "zmq-proxy-probe: pattern={} run={} sent={} received={} intact={} corrupted={} duplicates={} unexpected={} foreign={} elapsed_ms={}",
                    self.pattern,
                    self.run,
                    self.sent,
                    self.received,
                    self.intact,
                    self.corrupted,
                    self.duplicates,
                    self.unexpected,
                    self.foreign,
                    self.elapsed_ms
                );
                if let (Some(expected), Some(captured)) = (self.capture_expected, self.captured) {
                    println!("zmq-proxy-probe: capture expected={expected} captured={captured}");
                }
                if let Some(error) = &self.error {
                    println!("zmq-proxy-probe: error: {error}");
                }
                println!("zmq-proxy-probe: {}", if self.ok { "PASS" } else { "FAIL" });
            }
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = Args::parse();
    let started = Instant::now();
    let run_id = run_id();
    let run = Run {
        codec: Codec::new(&run_id, args.size),
        count: args.count,
        window: args.window,
        deadline: started + args.timeout,
    };
    let mut report = Report { pattern: args.pattern.name(), run: run_id, ..Report::default() };

    let result = probe(&args, &run, &mut report).await;
    if let Err(e) = result {
        report.error = Some(e.to_string());
    }
    report.elapsed_ms = started.elapsed().as_millis();
    report.judge();
    report.print(args.output);
    if report.ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn run_id() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{:x}{:08x}", std::process::id(), nanos)
}

async fn probe(args: &Args, run: &Run, report: &mut Report) -> Result<(), ProbeError> {
    let data_channels: &'static [u8] = match args.pattern {
        Pattern::SharedQueue => &[CH_REQUEST, CH_REPLY],
        Pattern::Forwarder => &[CH_SUBSCRIBED],
        Pattern::Pipeline => &[CH_PIPELINE],
    };
    let capture = match &args.capture {
        Some(endpoint) => {
            let expected = run.count * data_channels.len() as u64;
            report.capture_expected = Some(expected);
            Some(start_capture(run, endpoint, args.capture_socket, data_channels, expected).await?)
        }
        None => None,
    };
    let result = match args.pattern {
        Pattern::SharedQueue => shared_queue(args, run, capture.as_ref(), report).await,
        Pattern::Forwarder => forwarder(args, run, capture.as_ref(), report).await,
        Pattern::Pipeline => pipeline(args, run, capture.as_ref(), report).await,
    };
    if let Some(capture) = capture {
        // Copies may trail the data path; wait for them only when the data path succeeded.
        let waited = match &result {
            Ok(()) => {
                let mut changed = capture.changed.clone();
                let expected = capture.expected;
                run.wait_until(&mut changed, "waiting for capture copies", |_| {
                    capture.data() >= expected
                })
                .await
            }
            Err(_) => Ok(()),
        };
        report.captured = Some(capture.data());
        capture.task.abort();
        waited?;
    }
    result
}

async fn start_capture(
    run: &Run,
    endpoint: &str,
    kind: CaptureKind,
    data_channels: &'static [u8],
    expected: u64,
) -> Result<Capture, ProbeError> {
    let counts = Arc::new(std::sync::Mutex::new(CaptureCounts::default()));
    let (changed_tx, changed) = watch::channel(0u64);
    let mut socket: Box<dyn SocketRecv + Send> = match kind {
        CaptureKind::Sub => {
            let mut sub: SubSocket = run.connect("capture reader", endpoint).await?;
            sub.subscribe("").await.map_err(zmq("subscribing to capture"))?;
            Box::new(sub)
        }
        CaptureKind::Pull => Box::new(run.connect::<PullSocket>("capture reader", endpoint).await?),
        CaptureKind::Dealer => {
            Box::new(run.connect::<DealerSocket>("capture reader", endpoint).await?)
        }
    };
    let codec = run.codec.clone();
    let task_counts = Arc::clone(&counts);
    let deadline = run.deadline;
    let task = tokio::spawn(async move {
        // Bounded by the deadline; the probe aborts it earlier once it has what it expects.
        while let Ok(Ok(message)) = timeout_at(deadline, socket.recv()).await {
            // The payload is the last frame: ROUTER/DEALER copies carry routing frames first.
            let header = message.iter().last().and_then(|f| codec.header(f));
            if let Ok(mut c) = task_counts.lock() {
                match header {
                    Some((CH_WARMUP, _)) => c.warmups += 1,
                    Some((ch, _)) => *c.by_channel.entry(ch).or_insert(0) += 1,
                    None => c.foreign += 1,
                }
            }
            changed_tx.send_modify(|n| *n += 1);
        }
    });
    Ok(Capture { counts, changed, task, data_channels, expected })
}

/// Where warm-ups go: a plain sender, or a REQ socket that must read each reply before it may
/// send again.
enum WarmPeer<'a> {
    Send(&'a mut (dyn SocketSend + Send)),
    RoundTrip(&'a mut ReqSocket),
}

/// Sends warm-ups through `peer` until `live()` says they arrived, so that counted data is
/// never sent into a path that is still being set up (subscriptions, capture readers).
async fn warm_up(
    run: &Run,
    what: &str,
    mut peer: WarmPeer<'_>,
    first_seq: u64,
    live: impl Fn() -> bool,
) -> Result<(), ProbeError> {
    for k in 0..MAX_WARMUPS {
        if live() {
            return Ok(());
        }
        if Instant::now() >= run.deadline {
            break;
        }
        let message: ZmqMessage = run.codec.encode(CH_WARMUP, first_seq + k).into();
        match &mut peer {
            WarmPeer::Send(socket) => {
                timeout_at(run.deadline, socket.send(message))
                    .await
                    .map_err(|_| ProbeError::Timeout(format!("sending a warm-up for {what}")))?
                    .map_err(zmq("sending a warm-up"))?;
            }
            WarmPeer::RoundTrip(socket) => {
                socket.send(message).await.map_err(zmq("sending a warm-up"))?;
                recv_by(run, *socket, "a warm-up reply").await?;
            }
        }
        let next = (Instant::now() + WARMUP_INTERVAL).min(run.deadline);
        // Poll the condition at a fine grain so a live path is noticed well before the pace.
        while Instant::now() < next && !live() {
            tokio::time::sleep_until((Instant::now() + Duration::from_millis(5)).min(next)).await;
        }
    }
    if live() { Ok(()) } else { Err(ProbeError::Timeout(format!("warming up {what}"))) }
}

/// Keeps a sender within `window` messages of the capture reader: a PUB capture drops what it
/// cannot queue, and a drop there would look like a proxy bug.
async fn pace_capture(
    run: &Run,
    capture: Option<&Capture>,
    sent_copies: u64,
) -> Result<(), ProbeError> {
    let Some(capture) = capture else {
        return Ok(());
    };
    if sent_copies <= run.window {
        return Ok(());
    }
    let floor = sent_copies - run.window;
    let mut changed = capture.changed.clone();
    run.wait_until(&mut changed, "waiting for the capture to keep up", |_| capture.data() >= floor)
        .await
}

async fn shared_queue(
    args: &Args,
    run: &Run,
    capture: Option<&Capture>,
    report: &mut Report,
) -> Result<(), ProbeError> {
    // The worker connects first so the proxy's DEALER has somewhere to send the first request.
    let mut worker: RepSocket = run.connect("worker", &args.backend).await?;
    let mut client: ReqSocket = run.connect("client", &args.frontend).await?;

    let worker_codec = run.codec.clone();
    let deadline = run.deadline;
    let worker_task = tokio::spawn(async move {
        // Bounded by the deadline; aborted when the client is done.
        while let Ok(Ok(request)) = timeout_at(deadline, worker.recv()).await {
            let reply = reply_for(&worker_codec, request);
            if worker.send(reply).await.is_err() {
                break;
            }
        }
    });

    let result = async {
        if let Some(capture) = capture {
            // A REQ socket is lock-step, so each warm-up is a whole round trip.
            warm_up(run, "the capture reader", WarmPeer::RoundTrip(&mut client), 0, || {
                capture.warmups() > 0
            })
            .await?;
        }
        let (mut tally, _progress) = Tally::new(CH_REPLY, run.count);
        let mut outcome = Ok(());
        for seq in 0..run.count {
            if let Err(e) = pace_capture(run, capture, 2 * seq).await {
                outcome = Err(e);
                break;
            }
            let request = run.codec.encode(CH_REQUEST, seq);
            if let Err(e) = client.send(request.into()).await {
                outcome = Err(zmq("sending request")(e));
                break;
            }
            report.sent += 1;
            match recv_by(run, &mut client, "reply").await {
                // A reply for another sequence number lands on that number's slot, so it
                // shows up as a duplicate or a missing reply rather than passing.
                Ok(reply) => match reply.iter().last() {
                    Some(frame) => tally.record(&run.codec, frame),
                    None => tally.unexpected += 1,
                },
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        report.received = tally.received;
        report.intact = tally.intact;
        report.corrupted = tally.corrupted;
        report.duplicates = tally.duplicates;
        report.unexpected = tally.unexpected;
        report.foreign = tally.foreign;
        outcome
    }
    .await;
    worker_task.abort();
    result
}

/// The worker's answer: requests come back as replies with the same sequence number, anything
/// else (warm-ups, foreign traffic) is echoed so the client's lock-step never stalls.
fn reply_for(codec: &Codec, request: ZmqMessage) -> ZmqMessage {
    match request.iter().last().map(|f| codec.header(f)) {
        Some(Some((CH_REQUEST, seq))) => {
            let frame = request.iter().last().cloned().unwrap_or_default();
            if codec.intact(&frame, CH_REQUEST, seq) {
                codec.encode(CH_REPLY, seq).into()
            } else {
                // Keep the corruption visible to the client instead of repairing it.
                let mut bytes = frame.to_vec();
                if let Some(b) = bytes.get_mut(codec.prefix.len()) {
                    *b = CH_REPLY;
                }
                ZmqMessage::from(bytes)
            }
        }
        _ => request,
    }
}

async fn recv_by<S: SocketRecv>(
    run: &Run,
    socket: &mut S,
    what: &str,
) -> Result<ZmqMessage, ProbeError> {
    match timeout_at(run.deadline, socket.recv()).await {
        Ok(Ok(message)) => Ok(message),
        Ok(Err(source)) => Err(ProbeError::Timeout(format!("receiving {what}: {source}"))),
        Err(_) => Err(ProbeError::Timeout(format!("waiting for {what}"))),
    }
}

/// Runs `recv` into a tally until `count` data messages arrived or the deadline passed.
fn spawn_receiver<S: SocketRecv + Send + 'static>(
    run: &Run,
    mut socket: S,
    mut tally: Tally,
) -> tokio::task::JoinHandle<Tally> {
    let codec = run.codec.clone();
    let deadline = run.deadline;
    let count = run.count;
    tokio::spawn(async move {
        // Bounded by the deadline and by the number of data messages expected.
        while tally.received < count {
            match timeout_at(deadline, socket.recv()).await {
                Ok(Ok(message)) => match message.iter().last() {
                    Some(frame) => tally.record(&codec, frame),
                    None => tally.unexpected += 1,
                },
                _ => break,
            }
        }
        tally
    })
}

async fn finish_receiver(
    run: &Run,
    mut progress: watch::Receiver<u64>,
    receiver: tokio::task::JoinHandle<Tally>,
    report: &mut Report,
) -> Result<(), ProbeError> {
    let count = run.count;
    let waited =
        run.wait_until(&mut progress, "waiting for the last messages", |r| *r >= count).await;
    // The receiver ends by itself at `count` or at the deadline, so this join is bounded.
    let tally = receiver.await.map_err(|e| ProbeError::Timeout(format!("receiver task: {e}")))?;
    report.received = tally.received;
    report.intact = tally.intact;
    report.corrupted = tally.corrupted;
    report.duplicates = tally.duplicates;
    report.unexpected = tally.unexpected;
    report.foreign = tally.foreign;
    waited
}

async fn pipeline(
    args: &Args,
    run: &Run,
    capture: Option<&Capture>,
    report: &mut Report,
) -> Result<(), ProbeError> {
    let puller: PullSocket = run.connect("puller", &args.backend).await?;
    let mut pusher: PushSocket = run.connect("pusher", &args.frontend).await?;
    let (tally, mut progress) = Tally::new(CH_PIPELINE, run.count);
    let receiver = spawn_receiver(run, puller, tally);

    if let Some(capture) = capture {
        warm_up(run, "the capture reader", WarmPeer::Send(&mut pusher), 0, || {
            capture.warmups() > 0
        })
        .await?;
    }
    for seq in 0..run.count {
        pace_capture(run, capture, seq).await?;
        if seq >= run.window {
            // PUSH does not drop, but pacing keeps memory bounded for large counts.
            let floor = seq - run.window;
            run.wait_until(&mut progress, "waiting for the puller", |r| *r >= floor).await?;
        }
        let message = run.codec.encode(CH_PIPELINE, seq);
        timeout_at(run.deadline, pusher.send(message.into()))
            .await
            .map_err(|_| ProbeError::Timeout("sending to the pipeline".into()))?
            .map_err(zmq("sending to the pipeline"))?;
        report.sent += 1;
    }
    finish_receiver(run, progress, receiver, report).await
}

async fn forwarder(
    args: &Args,
    run: &Run,
    capture: Option<&Capture>,
    report: &mut Report,
) -> Result<(), ProbeError> {
    let mut subscriber: SubSocket = run.connect("subscriber", &args.backend).await?;
    // Subscribing to the `s` channel prefix leaves `u` as a topic nobody asked for: seeing it
    // at the subscriber would mean subscriptions are not honoured through the proxy.
    let mut topic = run.codec.prefix.clone();
    topic.push(CH_SUBSCRIBED);
    let mut warm_topic = run.codec.prefix.clone();
    warm_topic.push(CH_WARMUP);
    for t in [&topic, &warm_topic] {
        let t = String::from_utf8_lossy(t).into_owned();
        subscriber.subscribe(&t).await.map_err(zmq("subscribing"))?;
    }
    let mut publisher: PubSocket = run.connect("publisher", &args.frontend).await?;
    let (tally, mut progress) = Tally::new(CH_SUBSCRIBED, run.count);
    let warmups = Arc::clone(&tally.warmups);
    let receiver = spawn_receiver(run, subscriber, tally);

    // Subscriptions travel SUB -> XPUB -> proxy -> XSUB -> PUB after the connects return; until
    // they arrive a PUB drops everything, so nothing counted is sent before a warm-up is seen.
    warm_up(run, "the subscription", WarmPeer::Send(&mut publisher), 0, || {
        warmups.load(Ordering::Relaxed) > 0
    })
    .await?;
    if let Some(capture) = capture {
        warm_up(run, "the capture reader", WarmPeer::Send(&mut publisher), MAX_WARMUPS, || {
            capture.warmups() > 0
        })
        .await?;
    }

    let mut unsubscribed = 0u64;
    for seq in 0..run.count {
        pace_capture(run, capture, seq).await?;
        if seq >= run.window {
            let floor = seq - run.window;
            run.wait_until(&mut progress, "waiting for the subscriber", |r| *r >= floor).await?;
        }
        let off_topic = run.codec.encode(CH_UNSUBSCRIBED, seq);
        publisher.send(off_topic.into()).await.map_err(zmq("publishing"))?;
        unsubscribed += 1;
        let message = run.codec.encode(CH_SUBSCRIBED, seq);
        publisher.send(message.into()).await.map_err(zmq("publishing"))?;
        report.sent += 1;
    }
    report.unsubscribed_sent = Some(unsubscribed);
    // Each off-topic message is published before its on-topic twin on the same path, so once
    // the last on-topic one arrived any leaked off-topic one would already have been counted.
    finish_receiver(run, progress, receiver, report).await
}
