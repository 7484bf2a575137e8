//! A dead worker replaced by a new process, where the MPI library can
//! spawn one. Open MPI 4.1 can (about 300 ms a process, blocking the
//! caller); Debian's MPICH 4.0 with its UCX network module refuses ("not
//! supported with ucx netmod"), and there spares are the only stand-ins.
//!
//! Rank 0 spawns one process of this binary, with its own arguments, on
//! `MPI_COMM_SELF`: the new process has a world of its own and reaches
//! rank 0 through its parent intercommunicator. It first receives the rank
//! it stands for and the size of rank 0's world, then runs the worker loop
//! as that rank, with that rank's store directory. Rank 0 reaches it
//! through `Ranks`, which sends to a replaced rank over its
//! intercommunicator, and drops what still comes from the world rank it
//! replaced.

use super::outbox::{receive, Route};
use crate::stream::wire::Frame;
use mpi::point_to_point::{Destination, MatchedReceiveVec, Source};
use mpi::topology::{Communicator, InterCommunicator, SimpleCommunicator};
use mpi::traits::{AsRaw, FromRaw};
use std::ffi::CString;
use std::mem::ManuallyDrop;

/// Tag of the rank and world size rank 0 sends a process it spawned.
const TAG_IDENTITY: mpi::Tag = 4;

/// Where rank 0's messages to each worker rank go.
pub struct Ranks {
    world: SimpleCommunicator,
    /// By rank: the process spawned in that rank's place, if any. Never
    /// disconnected (rsmpi's drop would wait for the other side): it lives
    /// as long as rank 0.
    spawned: Vec<Option<ManuallyDrop<InterCommunicator>>>,
}

impl Route for Ranks {
    fn isend(&self, rank: usize, data: &'static [u8], tag: mpi::Tag) -> mpi::ffi::MPI_Request {
        match self.spawned.get(rank) {
            Some(Some(inter)) => (**inter).isend(0, data, tag),
            Some(None) | None => self.world.isend(rank, data, tag),
        }
    }
}

impl Ranks {
    /// The world's ranks, none replaced yet.
    pub fn new() -> Ranks {
        let world = SimpleCommunicator::world();
        let size = world.size() as usize;
        Ranks {
            world,
            spawned: (0..size).map(|_| None).collect(),
        }
    }

    /// `rank` is served by the process behind `inter` from now on.
    pub fn replace(&mut self, rank: usize, inter: InterCommunicator) {
        match self.spawned.get_mut(rank) {
            Some(slot) => *slot = Some(ManuallyDrop::new(inter)),
            None => std::mem::forget(inter), // never disconnected
        }
    }

    /// Every frame batch waiting, with the rank that sent it; whether any
    /// frame was more than a heartbeat.
    pub fn receive(&self, mut each: impl FnMut(usize, Frame)) -> bool {
        let replaced = |rank: usize| matches!(self.spawned.get(rank), Some(Some(_)));
        let mut any = receive(&self.world, |from, frame| {
            // From a world rank replaced since: it is not in the cluster.
            if !replaced(from) {
                each(from, frame);
            }
        });
        for (rank, inter) in self.spawned.iter().enumerate() {
            if let Some(inter) = inter {
                any |= receive(&**inter, |_, frame| each(rank, frame));
            }
        }
        any
    }

    /// A message with `tag` waiting from some rank: the rank and the bytes.
    pub fn take_tagged(&self, tag: mpi::Tag) -> Option<(usize, Vec<u8>)> {
        if let Some(probed) = self
            .world
            .any_process()
            .immediate_matched_probe_with_tag(tag)
        {
            let (bytes, status) = probed.matched_receive_vec::<u8>();
            return Some((status.source_rank() as usize, bytes));
        }
        self.spawned.iter().enumerate().find_map(|(rank, inter)| {
            let probed = inter
                .as_ref()?
                .any_process()
                .immediate_matched_probe_with_tag(tag)?;
            Some((rank, probed.matched_receive_vec::<u8>().0))
        })
    }

    /// Send `rank` the exit code, and wait until it is sent.
    pub fn send_code(&self, rank: usize, code: i32, tag: mpi::Tag) {
        let message = super::exit_message(code);
        match self.spawned.get(rank) {
            Some(Some(inter)) => inter.process_at_rank(0).send_with_tag(&message[..], tag),
            Some(None) | None => self
                .world
                .process_at_rank(rank as mpi::Rank)
                .send_with_tag(&message[..], tag),
        }
    }
}

/// Start a process of this binary, with this process's arguments, to
/// stand for `rank` of a world of `size`; the intercommunicator to it, or
/// why the MPI library would not. Blocks for as long as the start takes.
/// Called under the MPI lock unless MPI runs with `MPI_THREAD_MULTIPLE`.
pub fn spawn(rank: usize, size: usize) -> Result<InterCommunicator, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let program = CString::new(exe.as_os_str().as_encoded_bytes())
        .map_err(|_| "the binary's path holds a NUL byte".to_string())?;
    let args = std::env::args_os()
        .skip(1)
        .map(|a| CString::new(a.as_encoded_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| "an argument holds a NUL byte".to_string())?;
    let mut argv: Vec<*mut libc::c_char> = args
        .iter()
        .map(|a| a.as_ptr().cast_mut())
        .chain(std::iter::once(std::ptr::null_mut()))
        .collect();
    // SAFETY: MPI is initialised; the strings outlive the call, which only
    // reads them; the out-pointers are valid. COMM_SELF returns errors
    // (`super::Cluster::init`), so a refusal comes back as a code.
    let (rc, errcode, inter) = unsafe {
        let mut inter = mpi::ffi::RSMPI_COMM_NULL;
        let mut errcode: libc::c_int = 0;
        let rc = mpi::ffi::MPI_Comm_spawn(
            program.as_ptr(),
            argv.as_mut_ptr(),
            1,
            mpi::ffi::RSMPI_INFO_NULL,
            0,
            mpi::ffi::RSMPI_COMM_SELF,
            &mut inter,
            &mut errcode,
        );
        (rc, errcode, inter)
    };
    let success = mpi::ffi::MPI_SUCCESS as libc::c_int;
    if rc != success || errcode != success {
        let code = if rc != success { rc } else { errcode };
        return Err(error_text(code));
    }
    // SAFETY: a live intercommunicator just returned by MPI_Comm_spawn,
    // used only through the wrapper from now on.
    let inter = unsafe {
        mpi::ffi::MPI_Comm_set_errhandler(inter, mpi::ffi::RSMPI_ERRORS_RETURN);
        InterCommunicator::from_raw(inter)
    };
    let identity = [rank as u64, size as u64];
    inter
        .process_at_rank(0)
        .send_with_tag(&identity[..], TAG_IDENTITY);
    Ok(inter)
}

/// Tell a process spawned for nothing to exit with `message` (sent with
/// `tag`), and let go of it without disconnecting (see `Ranks`).
pub fn dismiss(inter: InterCommunicator, message: &[u8], tag: mpi::Tag) {
    inter.process_at_rank(0).send_with_tag(message, tag);
    std::mem::forget(inter);
}

/// MPI's text for error `code`, on one line.
fn error_text(code: libc::c_int) -> String {
    let mut buf = vec![0 as libc::c_char; mpi::ffi::MPI_MAX_ERROR_STRING as usize + 1];
    let mut len: libc::c_int = 0;
    // SAFETY: the buffer holds MPI_MAX_ERROR_STRING characters and more.
    unsafe { mpi::ffi::MPI_Error_string(code, buf.as_mut_ptr(), &mut len) };
    let bytes: Vec<u8> = buf[..len.max(0) as usize]
        .iter()
        .map(|&c| c as u8)
        .collect();
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    format!("MPI error {code}: {}", lines.join(" / "))
}

/// In a process rank 0 spawned: the intercommunicator to rank 0. Leaked:
/// rsmpi's drop would disconnect it, which waits for rank 0.
pub fn parent() -> Option<&'static InterCommunicator> {
    SimpleCommunicator::world()
        .parent()
        .map(|parent| &*Box::leak(Box::new(parent)))
}

/// In a process rank 0 spawned: the rank it stands for and the size of
/// rank 0's world, as rank 0 sent them.
pub fn identity(parent: &InterCommunicator) -> Result<(usize, usize), String> {
    // SAFETY: a live communicator; errors are returned, not fatal.
    unsafe {
        mpi::ffi::MPI_Comm_set_errhandler(parent.as_raw(), mpi::ffi::RSMPI_ERRORS_RETURN);
    }
    let (values, _) = parent
        .process_at_rank(0)
        .receive_vec_with_tag::<u64>(TAG_IDENTITY);
    match values[..] {
        [rank, size] if rank > 0 && rank < size => Ok((rank as usize, size as usize)),
        _ => Err(format!("rank 0 sent a malformed identity: {values:?}")),
    }
}
