//! The serial console: a vm-superio 16550A on `0x3f8`/IRQ 4, its output to the host, its input
//! from the host, and the scanner that finds the guest command's exit status in the output.
//!
//! Input never blocks a vCPU: host bytes wait in a bounded queue in the event loop and are moved
//! into the UART FIFO as the guest drains it (the UART tells us through an eventfd).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use event_manager::{EventOps, Events, MutEventSubscriber};
use vm_superio::serial::SerialEvents;
use vm_superio::Serial;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use super::bus::BusDevice;
use super::legacy::EventFdTrigger;

/// Base port of COM1.
pub const COM1_BASE: u64 = 0x3f8;
/// Ports covered by a 16550A.
pub const COM1_LEN: u64 = 8;
/// The line the guest init prints after the command it ran: `vmm-guest: exit-status=N`.
pub const EXIT_STATUS_MARKER: &str = "vmm-guest: exit-status=";
/// Longest console line the status scanner keeps; longer lines cannot be the marker.
const MAX_SCANNED_LINE: usize = 256;
/// Most host input bytes held back while the guest has not read the UART FIFO.
const MAX_PENDING_INPUT: usize = 4096;

/// The exit status the guest reported on its console, once it has.
pub type GuestStatus = Arc<Mutex<Option<i32>>>;

/// Console output: passes every byte to the host writer and watches for the exit-status line.
pub struct ConsoleOutput {
    out: Box<dyn Write + Send>,
    line: Vec<u8>,
    status: GuestStatus,
}

impl ConsoleOutput {
    /// Output to `out`, with the scanned status stored in `status`.
    pub fn new(out: Box<dyn Write + Send>, status: GuestStatus) -> Self {
        Self {
            out,
            line: Vec::with_capacity(MAX_SCANNED_LINE),
            status,
        }
    }

    fn scan(&mut self, byte: u8) {
        match byte {
            b'\n' => {
                if let Some(code) = parse_status_line(&self.line) {
                    *self.status.lock().unwrap_or_else(|p| p.into_inner()) = Some(code);
                }
                self.line.clear();
            }
            b'\r' => {}
            _ if self.line.len() < MAX_SCANNED_LINE => self.line.push(byte),
            _ => {}
        }
    }
}

/// Parses `vmm-guest: exit-status=N` (N a decimal i32) from one console line.
pub fn parse_status_line(line: &[u8]) -> Option<i32> {
    let text = std::str::from_utf8(line).ok()?.trim();
    text.strip_prefix(EXIT_STATUS_MARKER)?.parse().ok()
}

impl Write for ConsoleOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for &b in buf {
            self.scan(b);
        }
        // Host output failing (a closed pipe) must not stop the guest: the bytes are dropped.
        if let Err(e) = self.out.write_all(buf) {
            log::debug!("console output dropped: {e}");
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = self.out.flush();
        Ok(())
    }
}

/// Tells the input side that the guest drained the receive FIFO.
pub struct InputDrained(EventFd);

impl SerialEvents for InputDrained {
    fn buffer_read(&self) {}
    fn out_byte(&self) {}
    fn tx_lost_byte(&self) {}
    fn in_buffer_empty(&self) {
        if let Err(e) = self.0.write(1) {
            log::warn!("serial: cannot signal drained input: {e}");
        }
    }
}

/// The UART as seen by the guest.
pub struct SerialDevice {
    uart: Serial<EventFdTrigger, InputDrained, ConsoleOutput>,
}

impl SerialDevice {
    /// A UART raising `irq_evt` (an irqfd) and writing to `out`; `drained_evt` is signalled
    /// when the guest has read all input.
    pub fn new(irq_evt: EventFd, drained_evt: EventFd, out: ConsoleOutput) -> Self {
        Self {
            uart: Serial::with_events(EventFdTrigger(irq_evt), InputDrained(drained_evt), out),
        }
    }

    /// Whether the guest driver has enabled the receive interrupt, i.e. opened the port. Input
    /// sent before that would be thrown away when the driver resets the FIFO.
    fn accepts_input(&self) -> bool {
        const IER_RDA: u8 = 0x01;
        self.uart.state().interrupt_enable & IER_RDA != 0
    }

    /// Moves as much of `pending` into the receive FIFO as fits, once the guest takes input.
    fn feed(&mut self, pending: &mut VecDeque<u8>) {
        if pending.is_empty() || !self.accepts_input() {
            return;
        }
        let room = self.uart.fifo_capacity().min(pending.len());
        if room == 0 {
            return;
        }
        let chunk: Vec<u8> = pending.drain(..room).collect();
        if let Err(e) = self.uart.enqueue_raw_bytes(&chunk) {
            log::warn!("serial: cannot queue input: {e:?}");
        }
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let (Some(first), Ok(off)) = (data.first_mut(), u8::try_from(offset)) {
            *first = self.uart.read(off);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        const IER_OFFSET: u8 = 1;
        if let (Some(&v), Ok(off)) = (data.first(), u8::try_from(offset)) {
            if let Err(e) = self.uart.write(off, v) {
                log::warn!("serial: write failed: {e:?}");
            }
            // The driver enabling receive interrupts may unblock input waiting on the host side.
            if off == IER_OFFSET && self.accepts_input() {
                self.uart.events().in_buffer_empty();
            }
        }
    }
}

const TOKEN_INPUT: u32 = 1;
const TOKEN_DRAINED: u32 = 2;

/// Event-loop side of the console input: reads the host input and feeds the UART.
pub struct SerialInput {
    serial: Arc<Mutex<SerialDevice>>,
    input: Option<File>,
    drained_evt: EventFd,
    pending: VecDeque<u8>,
    watching_input: bool,
}

impl SerialInput {
    /// Input from `input` (`None`: the guest gets no input) into `serial`.
    pub fn new(
        serial: Arc<Mutex<SerialDevice>>,
        input: Option<File>,
        drained_evt: EventFd,
    ) -> Self {
        Self {
            serial,
            input,
            drained_evt,
            pending: VecDeque::new(),
            watching_input: false,
        }
    }

    fn watch_input(&mut self, ops: &mut EventOps, on: bool) {
        let Some(input) = &self.input else { return };
        if on == self.watching_input {
            return;
        }
        let ev = Events::with_data(input, TOKEN_INPUT, EventSet::IN);
        let res = if on { ops.add(ev) } else { ops.remove(ev) };
        match res {
            Ok(()) => self.watching_input = on,
            Err(e) => {
                // Files such as /dev/null cannot be polled: the guest simply gets no input.
                log::debug!("serial: console input not used: {e:?}");
                self.input = None;
            }
        }
    }

    fn read_input(&mut self, ops: &mut EventOps) {
        let Some(input) = self.input.as_mut() else {
            return;
        };
        let mut buf = [0u8; 1024];
        let want = buf.len().min(MAX_PENDING_INPUT - self.pending.len());
        match input.read(&mut buf[..want]) {
            Ok(0) => {
                self.watch_input(ops, false);
                self.input = None;
            }
            Ok(n) => self.pending.extend(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                log::warn!("serial: console input closed: {e}");
                self.watch_input(ops, false);
                self.input = None;
            }
        }
    }

    fn feed(&mut self, ops: &mut EventOps) {
        self.serial
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .feed(&mut self.pending);
        // Stop reading the host while a full queue waits for the guest.
        let room = self.pending.len() < MAX_PENDING_INPUT;
        self.watch_input(ops, room);
    }
}

impl MutEventSubscriber for SerialInput {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match events.data() {
            TOKEN_INPUT => {
                if events.event_set().intersects(EventSet::IN) {
                    self.read_input(ops);
                } else {
                    self.watch_input(ops, false);
                    self.input = None;
                }
            }
            TOKEN_DRAINED => {
                let _ = self.drained_evt.read();
            }
            _ => {}
        }
        self.feed(ops);
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::with_data(
            &self.drained_evt,
            TOKEN_DRAINED,
            EventSet::IN,
        )) {
            log::error!("serial: cannot watch the UART: {e:?}");
        }
        self.watch_input(ops, true);
    }
}

impl AsRawFd for SerialInput {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.drained_evt.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn status_line_is_found_and_output_passes_through() {
        let sink = Shared::default();
        let status = GuestStatus::default();
        let mut out = ConsoleOutput::new(Box::new(sink.clone()), status.clone());
        out.write_all(b"6.1.0\r\nvmm-guest: exit-status=3\r\n")
            .unwrap();
        assert_eq!(*status.lock().unwrap(), Some(3));
        assert_eq!(
            sink.0.lock().unwrap().as_slice(),
            b"6.1.0\r\nvmm-guest: exit-status=3\r\n"
        );
    }

    #[test]
    fn malformed_status_lines_are_ignored() {
        for line in [
            "vmm-guest: exit-status=",
            "vmm-guest: exit-status=x",
            "xx vmm-guest: exit-status=1",
            "vmm-guest: exit-status=99999999999",
        ] {
            assert_eq!(parse_status_line(line.as_bytes()), None, "{line}");
        }
        assert_eq!(parse_status_line(b"vmm-guest: exit-status=-1"), Some(-1));
        let status = GuestStatus::default();
        let mut out = ConsoleOutput::new(Box::new(std::io::sink()), status.clone());
        let long = format!("{}vmm-guest: exit-status=4\n", "y".repeat(1000));
        out.write_all(long.as_bytes()).unwrap();
        assert_eq!(*status.lock().unwrap(), None);
    }

    #[test]
    fn uart_input_is_fed_only_as_far_as_the_fifo_allows() {
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let drained = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let out = ConsoleOutput::new(Box::new(std::io::sink()), GuestStatus::default());
        let mut dev =
            SerialDevice::new(irq.try_clone().unwrap(), drained.try_clone().unwrap(), out);
        let mut pending: VecDeque<u8> = (0..100u8).collect();
        dev.feed(&mut pending);
        assert_eq!(
            pending.len(),
            100,
            "no input before the driver enables receive interrupts"
        );
        dev.write(1, &[0x01]); // IER: received-data-available interrupt on
        assert_eq!(
            drained.read().unwrap(),
            1,
            "enabling the interrupt wakes the input side"
        );
        dev.feed(&mut pending);
        assert_eq!(pending.len(), 100 - 64, "the 16550A FIFO holds 64 bytes");
        // The guest reads the data register 64 times; the drained event then fires.
        let mut b = [0u8];
        for i in 0..64u8 {
            dev.read(0, &mut b);
            assert_eq!(b[0], i);
        }
        assert_eq!(drained.read().unwrap(), 1);
        dev.feed(&mut pending);
        assert!(pending.is_empty());
    }
}
