//! The one way into a guest's linear memory: every pointer and length a guest passes goes
//! through [`GuestPtr`] and [`GuestMemory`], which check the arithmetic and the bounds and
//! answer `EFAULT` (or `EINVAL` for sizes that cannot be meant) instead of panicking or
//! wrapping. Modelled on wasmtime's `GuestPtr::add`.

use std::ops::Range;

use super::errno::Errno;
use super::wasi_types::iovec;

/// Most buffers one `fd_read`/`fd_write`/`sock_recv`/`sock_send` takes, as Linux's
/// `IOV_MAX`: more is `EINVAL`, so a guest cannot make the host allocate for millions.
pub const IOV_MAX: u32 = 1024;

/// An address in a guest's linear memory (wasm32: a 32-bit offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct GuestPtr(pub u32);

impl GuestPtr {
    /// `n` bytes further on, or `EFAULT` if that wraps past the 4 GiB address space.
    pub fn add(self, n: u32) -> Result<GuestPtr, Errno> {
        self.0.checked_add(n).map(GuestPtr).ok_or(Errno::Fault)
    }

    /// Element `i` of an array of `size`-byte records starting here, or `EFAULT` if its
    /// address does not fit in 32 bits.
    pub fn element(self, i: u32, size: u32) -> Result<GuestPtr, Errno> {
        self.add(i.checked_mul(size).ok_or(Errno::Fault)?)
    }
}

impl From<u32> for GuestPtr {
    fn from(p: u32) -> Self {
        GuestPtr(p)
    }
}

impl std::fmt::Display for GuestPtr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// One `iovec`/`ciovec`: a guest buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Iovec {
    pub buf: GuestPtr,
    pub len: u32,
}

/// A guest's linear memory, borrowed for the length of one host call (or one step of it).
pub struct GuestMemory<'a> {
    bytes: &'a mut [u8],
}

impl std::fmt::Debug for GuestMemory<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestMemory")
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// `read_uN`/`write_uN` for the little-endian integers of the ABI.
macro_rules! integers {
    ($($read:ident $write:ident $ty:ty;)*) => {$(
        #[doc = concat!("Reads a little-endian `", stringify!($ty), "`.")]
        pub fn $read(&self, ptr: GuestPtr) -> Result<$ty, Errno> {
            const SIZE: usize = std::mem::size_of::<$ty>();
            let mut raw = [0u8; SIZE];
            raw.copy_from_slice(self.bytes(ptr, SIZE as u32)?);
            Ok(<$ty>::from_le_bytes(raw))
        }

        #[doc = concat!("Writes a little-endian `", stringify!($ty), "`.")]
        pub fn $write(&mut self, ptr: GuestPtr, v: $ty) -> Result<(), Errno> {
            self.write_bytes(ptr, &v.to_le_bytes())
        }
    )*};
}

impl<'a> GuestMemory<'a> {
    pub fn new(bytes: &'a mut [u8]) -> Self {
        GuestMemory { bytes }
    }

    /// The byte range `[ptr, ptr + len)`, or `EFAULT` unless all of it is inside the memory.
    /// A zero-length range may sit at the very end, not past it.
    fn range(&self, ptr: GuestPtr, len: u32) -> Result<Range<usize>, Errno> {
        let start = usize::try_from(ptr.0).map_err(|_| Errno::Fault)?;
        let len = usize::try_from(len).map_err(|_| Errno::Fault)?;
        let end = start.checked_add(len).ok_or(Errno::Fault)?;
        if end > self.bytes.len() {
            return Err(Errno::Fault);
        }
        Ok(start..end)
    }

    /// The `len` bytes at `ptr`.
    pub fn bytes(&self, ptr: GuestPtr, len: u32) -> Result<&[u8], Errno> {
        let r = self.range(ptr, len)?;
        Ok(&self.bytes[r])
    }

    /// The `len` bytes at `ptr`, to write into.
    pub fn bytes_mut(&mut self, ptr: GuestPtr, len: u32) -> Result<&mut [u8], Errno> {
        let r = self.range(ptr, len)?;
        Ok(&mut self.bytes[r])
    }

    /// Copies `src` to `ptr`.
    pub fn write_bytes(&mut self, ptr: GuestPtr, src: &[u8]) -> Result<(), Errno> {
        let len = u32::try_from(src.len()).map_err(|_| Errno::Inval)?;
        self.bytes_mut(ptr, len)?.copy_from_slice(src);
        Ok(())
    }

    /// Sets the `len` bytes at `ptr` to zero.
    pub fn zero(&mut self, ptr: GuestPtr, len: u32) -> Result<(), Errno> {
        self.bytes_mut(ptr, len)?.fill(0);
        Ok(())
    }

    integers! {
        read_u8 write_u8 u8;
        read_u16 write_u16 u16;
        read_u32 write_u32 u32;
        read_u64 write_u64 u64;
    }

    /// Reads a guest pointer (a `u32`) stored at `ptr`.
    pub fn read_ptr(&self, ptr: GuestPtr) -> Result<GuestPtr, Errno> {
        self.read_u32(ptr).map(GuestPtr)
    }

    /// Checks that an array of `count` records of `size` bytes at `ptr` lies in the memory:
    /// `EINVAL` if its byte size does not even fit in 32 bits (no such array can exist),
    /// `EFAULT` if it runs past the end.
    pub fn check_array(&self, ptr: GuestPtr, count: u32, size: u32) -> Result<(), Errno> {
        let bytes = count.checked_mul(size).ok_or(Errno::Inval)?;
        self.range(ptr, bytes).map(drop)
    }

    /// The buffers of an `iovec` array. `EINVAL` for more than [`IOV_MAX`] of them or if
    /// their lengths add up to more than `u32::MAX` (as POSIX readv/writev do), `EFAULT` if
    /// the array is not in memory. The buffers themselves are checked when they are used.
    pub fn iovecs(&self, ptr: GuestPtr, count: u32) -> Result<Vec<Iovec>, Errno> {
        if count > IOV_MAX {
            return Err(Errno::Inval);
        }
        self.check_array(ptr, count, iovec::SIZE)?;
        let mut total = 0u32;
        (0..count)
            .map(|i| {
                let at = ptr.element(i, iovec::SIZE)?;
                let v = Iovec {
                    buf: self.read_ptr(at.add(iovec::BUF)?)?,
                    len: self.read_u32(at.add(iovec::LEN)?)?,
                };
                total = total.checked_add(v.len).ok_or(Errno::Inval)?;
                Ok(v)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointer_arithmetic_never_wraps() {
        assert_eq!(GuestPtr(u32::MAX).add(1), Err(Errno::Fault));
        assert_eq!(GuestPtr(u32::MAX - 1).add(1), Ok(GuestPtr(u32::MAX)));
        assert_eq!(GuestPtr(8).element(3, 48), Ok(GuestPtr(152)));
        assert_eq!(GuestPtr(0).element(u32::MAX, 2), Err(Errno::Fault));
        assert_eq!(GuestPtr(16).element(u32::MAX / 8, 8), Err(Errno::Fault));
    }

    #[test]
    fn reads_and_writes_are_little_endian() {
        let mut raw = [0u8; 16];
        let mut m = GuestMemory::new(&mut raw);
        m.write_u32(GuestPtr(0), 0x0403_0201).unwrap();
        m.write_u16(GuestPtr(4), 0x0605).unwrap();
        m.write_u8(GuestPtr(6), 7).unwrap();
        m.write_u64(GuestPtr(8), 0x0f0e_0d0c_0b0a_0908).unwrap();
        assert_eq!(m.read_u8(GuestPtr(0)), Ok(1));
        assert_eq!(m.read_u16(GuestPtr(4)), Ok(0x0605));
        assert_eq!(m.read_u32(GuestPtr(0)), Ok(0x0403_0201));
        assert_eq!(m.read_u64(GuestPtr(8)), Ok(0x0f0e_0d0c_0b0a_0908));
        assert_eq!(m.read_ptr(GuestPtr(0)), Ok(GuestPtr(0x0403_0201)));
        assert_eq!(raw[..7], [1, 2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn lengths_past_the_end_fault() {
        let mut raw = [0u8; 16];
        let mut m = GuestMemory::new(&mut raw);
        assert_eq!(m.bytes(GuestPtr(10), 8), Err(Errno::Fault));
        assert_eq!(m.bytes(GuestPtr(0), 17), Err(Errno::Fault));
        assert_eq!(m.write_u64(GuestPtr(12), 1), Err(Errno::Fault));
        assert_eq!(m.read_u32(GuestPtr(13)), Err(Errno::Fault));
        assert_eq!(m.zero(GuestPtr(8), 9), Err(Errno::Fault));
        // A failed write leaves the memory alone.
        assert_eq!(raw, [0u8; 16]);
    }

    #[test]
    fn huge_pointers_and_lengths_fault_without_panicking() {
        let mut raw = [0u8; 16];
        let mut m = GuestMemory::new(&mut raw);
        assert_eq!(m.bytes(GuestPtr(u32::MAX), 1), Err(Errno::Fault));
        assert_eq!(m.bytes(GuestPtr(u32::MAX), u32::MAX), Err(Errno::Fault));
        assert_eq!(m.bytes_mut(GuestPtr(1), u32::MAX), Err(Errno::Fault));
        assert_eq!(m.read_u64(GuestPtr(u32::MAX - 3)), Err(Errno::Fault));
    }

    #[test]
    fn zero_length_at_the_end_is_fine_past_it_is_not() {
        let mut raw = [0u8; 16];
        let mut m = GuestMemory::new(&mut raw);
        assert_eq!(m.bytes(GuestPtr(16), 0), Ok(&[][..]));
        assert_eq!(m.bytes_mut(GuestPtr(16), 0).map(|b| b.len()), Ok(0));
        assert_eq!(m.write_bytes(GuestPtr(16), &[]), Ok(()));
        assert_eq!(m.bytes(GuestPtr(17), 0), Err(Errno::Fault));
        assert_eq!(m.bytes(GuestPtr(12), 4).map(<[u8]>::len), Ok(4));
    }

    #[test]
    fn iovec_arrays() {
        let mut raw = [0u8; 64];
        let mut m = GuestMemory::new(&mut raw);
        m.write_u32(GuestPtr(0), 32).unwrap();
        m.write_u32(GuestPtr(4), 5).unwrap();
        m.write_u32(GuestPtr(8), 40).unwrap();
        m.write_u32(GuestPtr(12), 0).unwrap();
        assert_eq!(
            m.iovecs(GuestPtr(0), 2),
            Ok(vec![
                Iovec {
                    buf: GuestPtr(32),
                    len: 5
                },
                Iovec {
                    buf: GuestPtr(40),
                    len: 0
                },
            ])
        );
        assert_eq!(m.iovecs(GuestPtr(0), 0), Ok(vec![]));
        // The array itself must be in memory: 8 records of 8 bytes do not fit in 64 - 8.
        assert_eq!(m.iovecs(GuestPtr(8), 8), Err(Errno::Fault));
        // A count whose array could not exist in any 32-bit memory, or more than IOV_MAX.
        assert_eq!(m.iovecs(GuestPtr(0), u32::MAX), Err(Errno::Inval));
        assert_eq!(m.iovecs(GuestPtr(0), IOV_MAX + 1), Err(Errno::Inval));
        // Lengths adding up past u32::MAX.
        m.write_u32(GuestPtr(4), u32::MAX).unwrap();
        m.write_u32(GuestPtr(12), 1).unwrap();
        assert_eq!(m.iovecs(GuestPtr(0), 2), Err(Errno::Inval));
    }

    #[test]
    fn array_checks() {
        let mut raw = [0u8; 96];
        let m = GuestMemory::new(&mut raw);
        assert_eq!(m.check_array(GuestPtr(0), 2, 48), Ok(()));
        assert_eq!(m.check_array(GuestPtr(1), 2, 48), Err(Errno::Fault));
        assert_eq!(m.check_array(GuestPtr(0), 1 << 28, 48), Err(Errno::Inval));
        assert_eq!(m.check_array(GuestPtr(96), 0, 48), Ok(()));
    }
}
