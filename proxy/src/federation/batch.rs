//! A batch: several peers' messages in one link body frame, so a link message's framing (and,
//! with CURVE, its box) is paid once per batch, not once per message. The body is
//! `count: u32`, then per message `frames: u32` and per frame `length: u32` and its bytes, all
//! big-endian. The reader slices the frames out of the body without copying them. No I/O here.

use bytes::{BufMut, Bytes, BytesMut};

use super::frame::FrameError;
use crate::engine::curve::{CurveError, Sealer};
use crate::policy::sockets::{Batch, Msg};
use crate::wire::zmtp::{FLAG_MORE, put_header};

/// A batch is closed once its body holds this many bytes, so a reader gets a batch it can hand
/// on while the next one is still on the wire, and the writer's buffer stays bounded.
pub const BATCH_BYTES: usize = 64 * 1024;

/// The ZMTP long-frame flag: the body frame's length is patched in when the batch closes, so
/// its header takes the 8-byte length form whatever the body's size.
const FLAG_LONG: u8 = 0x02;
const LONG_HEADER: usize = 9;

/// The largest body a batch may have on a link whose messages may be `max` bytes: one message
/// of that size alone, or many smaller ones up to [`BATCH_BYTES`], plus the lengths of
/// `max_frames` frames.
pub fn max_body(max: usize, max_frames: usize) -> usize {
    max.max(BATCH_BYTES).saturating_add(max_frames.saturating_add(2).saturating_mul(4))
}

/// Why a batch could not be written.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error(transparent)]
    Curve(#[from] CurveError),
    #[error("a frame of {0} bytes is longer than a batch can carry")]
    FrameTooLong(usize),
}

/// Encoded size of `msg` inside a batch.
fn encoded_len(msg: &[Bytes]) -> usize {
    4 + msg.iter().map(|f| 4 + f.len()).sum::<usize>()
}

fn put_msg(msg: &[Bytes], len: usize, out: &mut BytesMut) -> Result<(), EncodeError> {
    out.reserve(len);
    write_msg(msg, out)
}

/// Appends `msg` to `out`, whose room the caller reserved: no step grows the buffer. The frame
/// count and the first frame's length go in one write.
#[inline(always)]
fn write_msg(msg: &[Bytes], out: &mut BytesMut) -> Result<(), EncodeError> {
    let Some((first, more)) = msg.split_first() else {
        out.put_u32(0);
        return Ok(());
    };
    let mut head = [0u8; 8];
    head[..4].copy_from_slice(&len32(msg.len())?.to_be_bytes());
    head[4..].copy_from_slice(&len32(first.len())?.to_be_bytes());
    out.put_slice(&head);
    out.put_slice(first);
    for f in more {
        out.put_u32(len32(f.len())?);
        out.put_slice(f);
    }
    Ok(())
}

fn len32(n: usize) -> Result<u32, EncodeError> {
    u32::try_from(n).map_err(|_| EncodeError::FrameTooLong(n))
}

/// Writes link messages of one kind as batches, appended to the connection's output buffer:
/// [`Writer::push`] opens a batch (its header frame) or adds to the open one, [`Writer::close`]
/// finishes it. Without CURVE the body is written in place and its length patched in; with
/// CURVE it is gathered aside and sealed as one box.
#[derive(Default)]
pub struct Writer {
    open: Option<Open>,
    /// The body of a batch to seal (CURVE only), reused.
    aside: BytesMut,
}

/// The most messages a batch counts (its count is a u32).
const MAX_COUNT: usize = u32::MAX as usize;

struct Open {
    /// The header frame it was opened with: a message with another header (kind) closes it.
    header: Bytes,
    count: u32,
    /// Where the body starts in `out` (plain) or `aside` (CURVE).
    body: usize,
}

impl Open {
    fn is_kind(&self, header: &Bytes) -> bool {
        // Headers are built once per kind per link: the same pointer is the same kind.
        self.header.as_ptr() == header.as_ptr() || self.header == *header
    }
}

impl Writer {
    /// Adds `msg` to the open batch of `header`'s kind, first closing one of another kind or
    /// one that is full; opens a batch if none is.
    pub fn push(
        &mut self,
        header: &Bytes,
        msg: &[Bytes],
        out: &mut BytesMut,
        mut sealer: Option<&mut Sealer>,
    ) -> Result<(), EncodeError> {
        let len = encoded_len(msg);
        let ends = self.open.as_ref().is_some_and(|o| {
            let buf = if sealer.is_some() { &self.aside } else { &*out };
            !o.is_kind(header)
                || o.count as usize >= MAX_COUNT
                || buf.len() - o.body + len > BATCH_BYTES
        });
        if ends {
            self.close(out, sealer.as_deref_mut())?;
        }
        if self.open.is_none() {
            self.open = Some(self.begin(header, out, sealer.as_deref_mut())?);
        }
        let buf = if sealer.is_some() { &mut self.aside } else { &mut *out };
        put_msg(msg, len, buf)?;
        if let Some(o) = &mut self.open {
            o.count += 1;
        }
        Ok(())
    }

    /// Adds `msgs` in order, as [`Writer::push`] would one by one: the messages that fit in the
    /// open batch are written after one reserve, without a kind or size check per message.
    pub fn push_run(
        &mut self,
        header: &Bytes,
        msgs: &[Msg],
        out: &mut BytesMut,
        mut sealer: Option<&mut Sealer>,
    ) -> Result<(), EncodeError> {
        if self.open.as_ref().is_some_and(|o| !o.is_kind(header)) {
            self.close(out, sealer.as_deref_mut())?;
        }
        let mut rest = msgs;
        while !rest.is_empty() {
            if self.open.is_none() {
                self.open = Some(self.begin(header, out, sealer.as_deref_mut())?);
            }
            let buf = if sealer.is_some() { &mut self.aside } else { &mut *out };
            let Some(o) = &mut self.open else { break };
            // The next messages that fit, each written as it is measured: at least one in a
            // batch just opened, as `push` puts a message longer than a batch alone in its own.
            let mut used = buf.len() - o.body;
            let mut take = 0usize;
            for m in rest {
                let l = encoded_len(m);
                let empty = o.count == 0 && take == 0;
                if !empty && (used + l > BATCH_BYTES || o.count as usize + take >= MAX_COUNT) {
                    break;
                }
                buf.reserve(l);
                write_msg(m, buf)?;
                used += l;
                take += 1;
            }
            o.count += take as u32;
            rest = &rest[take..];
            if !rest.is_empty() {
                self.close(out, sealer.as_deref_mut())?;
            }
        }
        Ok(())
    }

    fn begin(
        &mut self,
        header: &Bytes,
        out: &mut BytesMut,
        sealer: Option<&mut Sealer>,
    ) -> Result<Open, EncodeError> {
        let body = match sealer {
            Some(s) => {
                s.seal_frame(true, false, header, out)?;
                self.aside.clear();
                self.aside.put_u32(0);
                0
            }
            None => {
                put_header(out, FLAG_MORE, header.len());
                out.put_slice(header);
                out.put_u8(FLAG_LONG);
                out.put_u64(0);
                let at = out.len();
                out.put_u32(0);
                at
            }
        };
        Ok(Open { header: header.clone(), count: 0, body })
    }

    /// Finishes the open batch, if any: its count and length filled in, or its body sealed.
    pub fn close(
        &mut self,
        out: &mut BytesMut,
        sealer: Option<&mut Sealer>,
    ) -> Result<(), EncodeError> {
        let Some(o) = self.open.take() else { return Ok(()) };
        let count = o.count.to_be_bytes();
        match sealer {
            Some(s) => {
                self.aside[..4].copy_from_slice(&count);
                s.seal_frame(false, false, &self.aside, out)?;
                if self.aside.capacity() > 4 * BATCH_BYTES {
                    self.aside = BytesMut::new();
                }
            }
            None => {
                let len = (out.len() - o.body) as u64;
                out[o.body - 8..o.body].copy_from_slice(&len.to_be_bytes());
                out[o.body..o.body + 4].copy_from_slice(&count);
                debug_assert_eq!(out[o.body - LONG_HEADER], FLAG_LONG);
            }
        }
        Ok(())
    }

    /// Whether a batch is open (the writer must close it before other link messages).
    #[cfg(test)]
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }
}

/// The messages of a batch body, each frame a slice of `body`: in the one-frame form while
/// every message has one frame, so those reach a peer's queue without a frame list each. A
/// count that the bytes do not bear out, a length past the end, or bytes left over make the
/// whole batch malformed.
pub fn parse(body: &Bytes) -> Result<Batch, FrameError> {
    let mut rest = &body[..];
    let count = next_u32(&mut rest).ok_or(FrameError::Batch("cut short"))?;
    if count == 0 {
        return Err(FrameError::Batch("no message"));
    }
    // Each message takes at least its 4-byte frame count: a count beyond that is a lie, and
    // refused before anything is allocated for it.
    if count > rest.len() / 4 {
        return Err(FrameError::Batch("more messages than bytes"));
    }
    let mut frames = Vec::with_capacity(count);
    // Empty until a message has more than one frame; from then on every message goes here.
    let mut msgs: Vec<Msg> = Vec::new();
    for _ in 0..count {
        let n = next_u32(&mut rest).ok_or(FrameError::Batch("cut short"))?;
        if n == 0 || n > rest.len() / 4 {
            return Err(FrameError::Batch("a message's frame count"));
        }
        if n == 1 && msgs.is_empty() {
            frames.push(next_frame(body, &mut rest)?);
            continue;
        }
        if msgs.is_empty() {
            msgs.reserve(count);
            msgs.extend(frames.drain(..).map(|f| vec![f]));
        }
        let mut msg = Vec::with_capacity(n);
        for _ in 0..n {
            msg.push(next_frame(body, &mut rest)?);
        }
        msgs.push(msg);
    }
    if !rest.is_empty() {
        return Err(FrameError::Batch("bytes after the last message"));
    }
    Ok(if msgs.is_empty() { Batch::Frames(frames) } else { Batch::Msgs(msgs) })
}

/// The frame `rest` (a tail of `body`) starts with, as a slice of `body`, and `rest` moved
/// past it.
#[inline(always)]
fn next_frame(body: &Bytes, rest: &mut &[u8]) -> Result<Bytes, FrameError> {
    let len = next_u32(rest).ok_or(FrameError::Batch("cut short"))?;
    let Some((_, after)) = rest.split_at_checked(len) else {
        return Err(FrameError::Batch("a frame past the end"));
    };
    let at = body.len() - rest.len();
    *rest = after;
    Ok(if len == 0 { Bytes::new() } else { body.slice(at..at + len) })
}

/// The big-endian u32 `rest` starts with, and `rest` moved past it.
#[inline(always)]
fn next_u32(rest: &mut &[u8]) -> Option<usize> {
    let (x, after) = rest.split_first_chunk::<4>()?;
    *rest = after;
    Some(u32::from_be_bytes(*x) as usize)
}

/// A batch body of `msgs`, for tests that build link messages by hand.
#[cfg(test)]
pub fn body_of(msgs: &[Msg]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u32(msgs.len() as u32);
    for m in msgs {
        put_msg(m, encoded_len(m), &mut b).expect("a test message fits");
    }
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::zmtp::{Decoder, Item};

    fn msg(frames: &[&'static [u8]]) -> Msg {
        frames.iter().map(|f| Bytes::from_static(f)).collect()
    }

    fn messages(out: &mut BytesMut) -> Vec<Vec<Bytes>> {
        let mut dec = Decoder::new(1 << 24);
        let mut all = Vec::new();
        while let Ok(Some(Item::Message(m))) = dec.decode(out) {
            all.push(m);
        }
        assert!(out.is_empty(), "whole messages only");
        all
    }

    #[test]
    fn a_batch_round_trips_its_messages_in_order() {
        let h = Bytes::from_static(b"header-ten");
        let sent = vec![
            msg(&[b"one"]),
            msg(&[b"", b"two", b""]),
            msg(&[&[7u8; 300]]),
            msg(&[b"\0\0\0\0\x01", b"", b"req"]),
        ];
        let mut w = Writer::default();
        let mut out = BytesMut::new();
        for m in &sent {
            w.push(&h, m, &mut out, None).expect("encoding");
        }
        assert!(w.is_open());
        w.close(&mut out, None).expect("closing");
        assert!(!w.is_open());
        let got = messages(&mut out);
        assert_eq!(got.len(), 1, "one link message for the whole batch");
        assert_eq!(got[0][0], h);
        assert_eq!(parse(&got[0][1]).map(Batch::into_msgs), Ok(sent));
    }

    #[test]
    fn a_new_kind_or_a_full_batch_starts_another_link_message() {
        let (a, b) = (Bytes::from_static(b"aaaaaaaaaa"), Bytes::from_static(b"bbbbbbbbbb"));
        let big: Msg = vec![Bytes::from(vec![1u8; BATCH_BYTES / 2])];
        let mut w = Writer::default();
        let mut out = BytesMut::new();
        w.push(&a, &big, &mut out, None).expect("encoding");
        w.push(&a, &big, &mut out, None).expect("encoding");
        w.push(&b, &msg(&[b"x"]), &mut out, None).expect("encoding");
        w.close(&mut out, None).expect("closing");
        let got = messages(&mut out);
        let heads: Vec<_> = got.iter().map(|m| m[0].clone()).collect();
        assert_eq!(heads, vec![a.clone(), a, b]);
        let counts: Vec<_> = got.iter().map(|m| parse(&m[1]).expect("batch").len()).collect();
        assert_eq!(counts, vec![1, 1, 1]);
    }

    /// A run is written as pushing its messages one by one would: the same link messages, split
    /// where a batch is full, after a batch of another kind is closed.
    #[test]
    fn a_run_writes_the_same_bytes_as_its_messages_pushed_one_by_one() {
        let (a, b) = (Bytes::from_static(b"aaaaaaaaaa"), Bytes::from_static(b"bbbbbbbbbb"));
        let mut run: Vec<Msg> = (0..600u32)
            .map(|i| vec![Bytes::from(vec![i as u8; 200 + i as usize % 7]), Bytes::new()])
            .collect();
        run.insert(300, vec![Bytes::from(vec![9u8; BATCH_BYTES + 10])]);
        let (mut one, mut all) = (Writer::default(), Writer::default());
        let (mut by_one, mut by_run) = (BytesMut::new(), BytesMut::new());
        one.push(&b, &msg(&[b"first"]), &mut by_one, None).expect("encoding");
        all.push(&b, &msg(&[b"first"]), &mut by_run, None).expect("encoding");
        for m in &run {
            one.push(&a, m, &mut by_one, None).expect("encoding");
        }
        all.push_run(&a, &run, &mut by_run, None).expect("encoding");
        one.close(&mut by_one, None).expect("closing");
        all.close(&mut by_run, None).expect("closing");
        assert_eq!(by_one, by_run);
        let got = messages(&mut by_run);
        assert!(got.len() > 3, "split in several batches: {}", got.len());
        let read: Vec<Msg> =
            got[1..].iter().flat_map(|m| parse(&m[1]).expect("batch").into_msgs()).collect();
        assert_eq!(read, run);
    }

    /// One-frame messages come out as their frames alone until a message has more frames; from
    /// there on, the whole batch as frame lists, in order.
    #[test]
    fn one_frame_messages_parse_without_a_frame_list_each() {
        let ones = vec![msg(&[b"a"]), msg(&[b""]), msg(&[b"ccc"])];
        let frames = ones.iter().map(|m| m[0].clone()).collect();
        assert_eq!(parse(&body_of(&ones)), Ok(Batch::Frames(frames)));
        let mut mixed = ones.clone();
        mixed.insert(2, msg(&[b"d", b"e"]));
        mixed.push(msg(&[b"f"]));
        assert_eq!(parse(&body_of(&mixed)), Ok(Batch::Msgs(mixed)));
    }

    #[test]
    fn malformed_batches_are_refused() {
        let mut good = BytesMut::new();
        let m = msg(&[b"ab", b"c"]);
        put_msg(&m, encoded_len(&m), &mut good).expect("encoding");
        let body = |count: u32, tail: &[u8]| {
            let mut b = BytesMut::new();
            b.put_u32(count);
            b.put_slice(tail);
            b.freeze()
        };
        assert_eq!(parse(&body(1, &good)).map(|m| m.len()), Ok(1));
        assert_eq!(parse(&Bytes::from_static(b"\0\0")), Err(FrameError::Batch("cut short")));
        assert_eq!(parse(&body(0, &[])), Err(FrameError::Batch("no message")));
        assert_eq!(parse(&body(2, &good)), Err(FrameError::Batch("cut short")));
        assert_eq!(
            parse(&body(u32::MAX, &good)),
            Err(FrameError::Batch("more messages than bytes"))
        );
        let mut extra = good.to_vec();
        extra.push(0);
        assert_eq!(parse(&body(1, &extra)), Err(FrameError::Batch("bytes after the last message")));
        let cut = &good[..good.len() - 1];
        assert_eq!(parse(&body(1, cut)), Err(FrameError::Batch("a frame past the end")));
        assert_eq!(
            parse(&body(1, &[0, 0, 0, 0])),
            Err(FrameError::Batch("a message's frame count"))
        );
    }
}
