//! A batch handed to a socket in one of two forms: any messages, each a list of frames; or
//! messages of one frame each, held as the frames alone. The second form lets a batch read
//! from somewhere that carries many messages in one buffer (a federation link's batch) reach a
//! peer's queue as slices of that buffer, without a frame list allocated per message.

use bytes::Bytes;

use super::Msg;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Batch {
    Msgs(Vec<Msg>),
    /// Each frame is a whole message.
    Frames(Vec<Bytes>),
}

impl Default for Batch {
    fn default() -> Self {
        Batch::Frames(Vec::new())
    }
}

impl Batch {
    pub fn len(&self) -> usize {
        match self {
            Batch::Msgs(m) => m.len(),
            Batch::Frames(f) => f.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The messages as frame lists (one allocation per message of the one-frame form: for
    /// paths that are not per-message hot, such as a stopping replica's hand-over).
    pub fn into_msgs(self) -> Vec<Msg> {
        match self {
            Batch::Msgs(m) => m,
            Batch::Frames(f) => f.into_iter().map(|f| vec![f]).collect(),
        }
    }

    /// Appends `more`, keeping the one-frame form while both are in it.
    pub fn extend(&mut self, more: Batch) {
        match (&mut *self, more) {
            (_, more) if more.is_empty() => {}
            (this, more) if this.is_empty() => *this = more,
            (Batch::Frames(a), Batch::Frames(b)) => a.extend(b),
            (Batch::Msgs(a), more) => a.extend(more.into_msgs()),
            (this, more) => {
                let mut all = std::mem::take(this).into_msgs();
                all.extend(more.into_msgs());
                *this = Batch::Msgs(all);
            }
        }
    }
}

impl From<Vec<Msg>> for Batch {
    fn from(m: Vec<Msg>) -> Self {
        Batch::Msgs(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(xs: &[&'static [u8]]) -> Batch {
        Batch::Frames(xs.iter().map(|x| Bytes::from_static(x)).collect())
    }

    #[test]
    fn extending_keeps_the_one_frame_form_and_the_order() {
        let mut b = Batch::default();
        b.extend(frames(&[b"a"]));
        b.extend(frames(&[b"b", b"c"]));
        assert_eq!(b, frames(&[b"a", b"b", b"c"]));
        let two: Msg = vec![Bytes::from_static(b"d"), Bytes::from_static(b"e")];
        b.extend(Batch::Msgs(vec![two.clone()]));
        let one = |x: &'static [u8]| vec![Bytes::from_static(x)];
        assert_eq!(b, Batch::Msgs(vec![one(b"a"), one(b"b"), one(b"c"), two.clone()]));
        b.extend(frames(&[b"f"]));
        assert_eq!(b.len(), 5);
        assert_eq!(b.into_msgs().last(), Some(&one(b"f")));
        let mut m = Batch::Msgs(Vec::new());
        m.extend(frames(&[b"g"]));
        assert_eq!(m, frames(&[b"g"]), "an empty batch takes the other's form");
    }
}
