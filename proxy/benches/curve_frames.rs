//! CURVE MESSAGE cost per frame: seal (what a writer does per frame it sends) and open (what a
//! reader does per frame it gets), for the payload sizes of `run.py`'s CURVE scenarios, on a
//! session made by the real handshake over an in-memory pipe.
//!
//!     cargo bench -p zmq-proxy --bench curve_frames            # 64 B, 256 B, 4 KiB
//!     cargo bench -p zmq-proxy --bench curve_frames -- 16 1024 # other sizes
//!
//! Prints nanoseconds per frame (median of 5 rounds). `proxy/benches/sodium_frames.c` measures
//! libsodium's crypto_box_afternm / crypto_box_open_afternm (what libzmq calls per frame) on
//! the same sizes, for comparison on the same machine.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use zmq_proxy::curve::{self, Allow, CurveClient, CurveServer, Mechanism, SecretKey, Session};
use zmq_proxy::zmtp::{Decoder, Item};
use zmq_proxy_api::socket::SocketType;

const CLIENT_SECRET: &str = "D:)Q[IlAW!ahhC2ac:9*A}h:p?([4%wOTJ%JR%cs";
const SERVER_SECRET: &str = "JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6";

fn sessions() -> (Session, Session) {
    let server_secret = SecretKey::from_z85(SERVER_SECRET).expect("secret");
    let client_secret = SecretKey::from_z85(CLIENT_SECRET).expect("secret");
    let server = Mechanism::Server(Arc::new(CurveServer {
        public: server_secret.public_key(),
        secret: server_secret.clone(),
        allow: Allow::Any,
    }));
    let client = Mechanism::Client(Arc::new(CurveClient {
        public: client_secret.public_key(),
        secret: client_secret,
        server: server_secret.public_key(),
        ephemeral: false,
    }));
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    rt.block_on(async {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (mut ar, mut aw) = tokio::io::split(a);
        let (mut br, mut bw) = tokio::io::split(b);
        let (mut abuf, mut bbuf) = (BytesMut::new(), BytesMut::new());
        let (s, c) = tokio::join!(
            curve::handshake(&server, &mut ar, &mut aw, SocketType::Pull, &mut abuf, 1 << 20),
            curve::handshake(&client, &mut br, &mut bw, SocketType::Push, &mut bbuf, 1 << 20),
        );
        let s = s.expect("server").session.expect("session");
        let c = c.expect("client").session.expect("session");
        (c, s)
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut sizes: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    if sizes.is_empty() {
        sizes = vec![64, 256, 4096];
    }
    let (client, server) = sessions();
    let (mut sealer, opener) = (client.sealer, server.opener);
    let mut dec = Decoder::new(1 << 20);
    dec.set_opener(Box::new(opener));
    for size in sizes {
        let payload = Bytes::from(vec![0xa5u8; size]);
        let frames = [payload];
        let iters = (20_000_000 / (size + 64)).clamp(2_000, 500_000);
        let mut seal_ns = Vec::new();
        let mut open_ns = Vec::new();
        for _ in 0..5 {
            // Seal a batch into one buffer (as a writer does), then decode it all.
            let mut wire = BytesMut::with_capacity(iters * (size + 64));
            let t = Instant::now();
            for _ in 0..iters {
                sealer.seal_message(&frames, &mut wire).expect("seal");
            }
            seal_ns.push(t.elapsed().as_nanos() as f64 / iters as f64);
            let t = Instant::now();
            let mut n = 0;
            while let Some(item) = dec.decode(&mut wire).expect("opens") {
                if let Item::Message(m) = item {
                    n += m.len();
                }
            }
            open_ns.push(t.elapsed().as_nanos() as f64 / iters as f64);
            assert_eq!(n, iters);
        }
        println!(
            "zmq-proxy CURVE {size} B: seal {:.0} ns, open {:.0} ns, seal+open {:.0} ns",
            median(seal_ns.clone()),
            median(open_ns.clone()),
            median(seal_ns) + median(open_ns),
        );
    }
}
