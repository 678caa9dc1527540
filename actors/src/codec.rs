//! A tiny binary encoding for store records: fixed-width little-endian
//! integers and length-prefixed bytes. Hand-written because records are
//! encoded on every commit of the simulator's hot path, and because a
//! decoder that names what was wrong is easier to keep strict by hand.

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    pub what: &'static str,
    pub offset: usize,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "corrupt record: {} at byte {}", self.what, self.offset)
    }
}

impl std::error::Error for DecodeError {}

#[derive(Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn with_tag(tag: u8) -> Writer {
        Writer::with_tag_and_capacity(tag, 48)
    }
    /// For a record whose size is known ahead: one allocation, none grown.
    pub fn with_tag_and_capacity(tag: u8, bytes: usize) -> Writer {
        let mut w = Writer {
            buf: Vec::with_capacity(bytes),
        };
        w.u8(tag);
        w
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u32(v.len() as u32);
        self.buf.extend_from_slice(v);
        self
    }
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

pub struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading a record that must begin with `tag`.
    pub fn expect_tag(
        buf: &'a [u8],
        tag: u8,
        what: &'static str,
    ) -> Result<Reader<'a>, DecodeError> {
        let mut r = Reader { buf, at: 0 };
        if r.u8(what)? != tag {
            return Err(DecodeError { what, offset: 0 });
        }
        Ok(r)
    }
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.at..end];
                self.at = end;
                Ok(s)
            }
            None => Err(DecodeError {
                what,
                offset: self.at,
            }),
        }
    }
    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }
    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    pub fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let n = self.u32(what)? as usize;
        self.take(n, what)
    }
    /// Whether every byte has been read (a record that grew a field reads
    /// it only when it is there).
    pub fn at_end(&self) -> bool {
        self.at == self.buf.len()
    }
    /// Records end exactly where their fields do: trailing bytes mean the
    /// record was written by something else.
    pub fn end(self, what: &'static str) -> Result<(), DecodeError> {
        if self.at == self.buf.len() {
            Ok(())
        } else {
            Err(DecodeError {
                what,
                offset: self.at,
            })
        }
    }
}
