//! Failures of this host rather than of the receiver: no file descriptor
//! left for a socket (EMFILE, ENFILE). Such an attempt says nothing about
//! the receiver, so it neither counts against the webhook's health nor uses
//! one of the delivery's retries: the delivery goes back to the queue, due
//! again shortly (`worker`).

/// Why a request could not even start: this process (or the system) has no
/// descriptor for its socket or its DNS lookup.
#[derive(Debug)]
pub struct DescriptorShortage {
    /// What needed the descriptor.
    pub what: String,
}

impl std::fmt::Display for DescriptorShortage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no file descriptor left for {}", self.what)
    }
}
impl std::error::Error for DescriptorShortage {}

/// The error is the process's or the system's descriptor table being full.
pub fn is_shortage(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// Whether a socket cannot be opened now for want of a descriptor: asked
/// after a failure whose cause does not say (getaddrinfo answers "name not
/// known" when it cannot open /etc/hosts or a socket to the DNS server).
pub fn descriptors_exhausted() -> bool {
    // SAFETY: socket(2) with constant arguments; the descriptor, when one
    // is made, is closed at once and never used.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd >= 0 {
        // SAFETY: fd was just returned by socket(2) and is ours alone.
        unsafe { libc::close(fd) };
        return false;
    }
    is_shortage(&std::io::Error::last_os_error())
}
