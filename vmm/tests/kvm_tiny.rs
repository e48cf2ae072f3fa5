//! KVM tests with tiny hand-assembled guests (no Linux): they prove that the VM's memory slots,
//! the port and MMIO buses, exit accounting, the long-mode boot state and fatal-exit reporting
//! work on the machine's `/dev/kvm`. They need `/dev/kvm` (tiny guests run even under the
//! software nested hypervisor of the build machines; see PLATFORM.md).

use std::sync::{Arc, Mutex};

use kvm_bindings::kvm_regs;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm::boot::{memory, regs};
use vmm::devices::bus::{Bus, BusDevice};
use vmm::stats::{ExitCounters, ExitKind};
use vmm::vstate::vcpu::{Vcpu, VcpuEmulation, VcpuStop};
use vmm::vstate::vm::Vm;

/// Records what the guest writes and answers reads with a fixed byte.
struct Probe {
    writes: Vec<(u64, Vec<u8>)>,
    answer: u8,
}

impl BusDevice for Probe {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(self.answer);
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        self.writes.push((offset, data.to_vec()));
    }
}

struct Tiny {
    _vm: Vm,
    mem: GuestMemoryMmap,
    vcpu: Vcpu,
    probe: Arc<Mutex<Probe>>,
    counters: Arc<ExitCounters>,
}

const PROBE_PORT: u64 = 0x3f8;
const DONE_PORT: u64 = 0x501;
const PROBE_MMIO: u64 = 0xd000_0000;

fn tiny_vm(mem_bytes: u64) -> Option<Tiny> {
    if !std::path::Path::new("/dev/kvm").exists() {
        eprintln!("SKIPPED: no /dev/kvm on this machine");
        return None;
    }
    let vm = Vm::new().expect("create VM");
    let mem = memory::create_guest_memory(mem_bytes).unwrap();
    vm.register_memory(&mem).unwrap();
    let probe = Arc::new(Mutex::new(Probe {
        writes: vec![],
        answer: 0x5a,
    }));
    let mut pio = Bus::new();
    pio.insert(probe.clone(), PROBE_PORT, 1).unwrap();
    pio.insert(probe.clone(), DONE_PORT, 1).unwrap();
    let mut mmio = Bus::new();
    mmio.insert(probe.clone(), PROBE_MMIO, 0x10).unwrap();
    let counters = Arc::new(ExitCounters::default());
    let vcpu = Vcpu::new(vm.fd(), 0, Arc::new(pio), Arc::new(mmio), counters.clone()).unwrap();
    Some(Tiny {
        _vm: vm,
        mem,
        vcpu,
        probe,
        counters,
    })
}

/// Runs until the guest writes to the done port, with a bound on the number of exits.
fn run_to_done(t: &mut Tiny) -> Vec<VcpuEmulation> {
    let mut seen = vec![];
    for _ in 0..100 {
        let e = t.vcpu.handle_kvm_exit();
        let done = t
            .probe
            .lock()
            .unwrap()
            .writes
            .iter()
            .any(|(o, d)| *o == 0 && d == &[0xd0]);
        let stopped = matches!(e, VcpuEmulation::Stopped(_));
        seen.push(e);
        if done || stopped {
            break;
        }
    }
    seen
}

/// Starts the vCPU in real mode at 0x1000 with flat segments.
fn start_real_mode(t: &Tiny) {
    let fd = t.vcpu.fd();
    let mut sregs = fd.get_sregs().unwrap();
    for seg in [&mut sregs.cs, &mut sregs.ds] {
        seg.base = 0;
        seg.selector = 0;
    }
    fd.set_sregs(&sregs).unwrap();
    let regs = kvm_regs {
        rip: 0x1000,
        rflags: 2,
        ..Default::default()
    };
    fd.set_regs(&regs).unwrap();
}

/// Starts the vCPU in the monitor's long-mode boot state at 1 MiB, after `adjust`.
fn start_long_mode(t: &Tiny, adjust: impl FnOnce(&mut kvm_bindings::kvm_sregs)) {
    regs::write_boot_tables(&t.mem).unwrap();
    let fd = t.vcpu.fd();
    let mut sregs = fd.get_sregs().unwrap();
    regs::setup_sregs(&mut sregs);
    adjust(&mut sregs);
    fd.set_sregs(&sregs).unwrap();
    fd.set_regs(&regs::boot_regs(0x10_0000, 0)).unwrap();
}

#[test]
fn real_mode_guest_does_port_io_and_writes_memory() {
    let Some(mut t) = tiny_vm(64 << 20) else {
        return;
    };
    #[rustfmt::skip]
    let code: &[u8] = &[
        0xba, 0xf8, 0x03,       // mov dx, 0x3f8
        0xb0, b'K',             // mov al, 'K'
        0xee,                   // out dx, al
        0xec,                   // in al, dx        (the probe answers 0x5a)
        0xa2, 0x00, 0x20,       // mov [0x2000], al
        0xba, 0x01, 0x05,       // mov dx, 0x501
        0xb0, 0xd0,             // mov al, 0xd0
        0xee,                   // out dx, al       (done)
    ];
    t.mem.write_slice(code, GuestAddress(0x1000)).unwrap();
    start_real_mode(&t);

    let seen = run_to_done(&mut t);
    assert!(
        seen.iter().all(|e| *e == VcpuEmulation::Handled),
        "{seen:?}"
    );
    let writes = t.probe.lock().unwrap().writes.clone();
    assert_eq!(writes, vec![(0, vec![b'K']), (0, vec![0xd0])]);
    let stored: u8 = t.mem.read_obj(GuestAddress(0x2000)).unwrap();
    assert_eq!(
        stored, 0x5a,
        "the value read from the port reached guest memory"
    );
    let stats = t.counters.snapshot();
    assert_eq!(stats.get(ExitKind::IoOut), 2);
    assert_eq!(stats.get(ExitKind::IoIn), 1);
}

#[test]
fn long_mode_boot_state_runs_64_bit_code_with_mmio() {
    let Some(mut t) = tiny_vm(64 << 20) else {
        return;
    };
    #[rustfmt::skip]
    let code: &[u8] = &[
        0x48, 0xb8, 0x00, 0x00, 0x00, 0xd0, 0, 0, 0, 0, // mov rax, 0xd0000000
        0xc6, 0x00, 0x42,                               // mov byte [rax], 0x42
        0x8a, 0x58, 0x08,                               // mov bl, [rax + 8]
        0x88, 0x1c, 0x25, 0x00, 0x30, 0x00, 0x00,       // mov [0x3000], bl
        0x48, 0xb9, 0, 0, 0, 0, 1, 0, 0, 0,             // mov rcx, 1 << 32
        0x48, 0x89, 0xc8,                               // mov rax, rcx (64-bit register)
        0x48, 0xc1, 0xe8, 0x20,                         // shr rax, 32
        0x66, 0xba, 0x01, 0x05,                         // mov dx, 0x501
        0x04, 0xcf,                                     // add al, 0xcf  (1 + 0xcf = 0xd0)
        0xee,                                           // out dx, al  (done)
    ];
    t.mem.write_slice(code, GuestAddress(0x10_0000)).unwrap();
    start_long_mode(&t, |_| {});

    let seen = run_to_done(&mut t);
    assert!(
        seen.iter().all(|e| *e == VcpuEmulation::Handled),
        "{seen:?}"
    );
    let writes = t.probe.lock().unwrap().writes.clone();
    assert_eq!(writes, vec![(0, vec![0x42]), (0, vec![0xd0])]);
    let stored: u8 = t.mem.read_obj(GuestAddress(0x3000)).unwrap();
    assert_eq!(stored, 0x5a);
    let stats = t.counters.snapshot();
    assert_eq!(stats.get(ExitKind::MmioWrite), 1);
    assert_eq!(stats.get(ExitKind::MmioRead), 1);
    assert_eq!(stats.get(ExitKind::IoOut), 1);
}

#[test]
fn unhandled_ports_read_as_all_ones() {
    let Some(mut t) = tiny_vm(64 << 20) else {
        return;
    };
    #[rustfmt::skip]
    let code: &[u8] = &[
        0xba, 0x00, 0x07,       // mov dx, 0x700 (no device)
        0xec,                   // in al, dx
        0xa2, 0x00, 0x20,       // mov [0x2000], al
        0xba, 0x01, 0x05,       // mov dx, 0x501
        0xb0, 0xd0,             // mov al, 0xd0
        0xee,                   // out dx, al
    ];
    t.mem.write_slice(code, GuestAddress(0x1000)).unwrap();
    start_real_mode(&t);
    run_to_done(&mut t);
    let stored: u8 = t.mem.read_obj(GuestAddress(0x2000)).unwrap();
    assert_eq!(stored, 0xff);
}

#[test]
fn triple_fault_is_reported_with_registers() {
    let Some(mut t) = tiny_vm(64 << 20) else {
        return;
    };
    // ud2 with an IDT too short for #UD, #GP and #DF: the CPU shuts down.
    t.mem
        .write_slice(&[0x0f, 0x0b], GuestAddress(0x10_0000))
        .unwrap();
    start_long_mode(&t, |s| s.idt.limit = 0);
    let seen = run_to_done(&mut t);
    match seen.last() {
        Some(VcpuEmulation::Stopped(VcpuStop::TripleFault { registers })) => {
            assert!(registers.contains("rip="), "{registers}");
        }
        other => panic!("expected a triple fault, got {other:?} after {seen:?}"),
    }
}

/// The in-process link between two DSM engines: what one sends, a thread hands to the other.
struct Pipe(Mutex<std::sync::mpsc::Sender<(u16, u16, Vec<u8>)>>, u16);

impl vmm::dsm::PeerSender for Pipe {
    fn send(&self, to: u16, payload: Vec<u8>) {
        let _ = self.0.lock().unwrap().send((self.1, to, payload));
    }
}

/// Window base of the tiny guests (inside the 4 GiB the boot page tables map).
const TINY_WINDOW: u64 = 0x8000_0000;

/// Proves the DSM engine end to end on real KVM memory without Linux: two VMs, each with a
/// 16-page window backed by its own engine (userfaultfd MISSING + WP), the engines joined by an
/// in-process link. Both guests add 1 to the same window word 2000 times with `lock inc`
/// (the page moves back and forth between the VMs), then meet at a barrier in the same page
/// and store the final value in RAM: both must see exactly 4000.
#[test]
fn two_vms_share_a_window_page_through_the_dsm_engines() {
    const ITERS: u32 = 2000;
    let (Some(t0), Some(t1)) = (tiny_vm(16 << 20), tiny_vm(16 << 20)) else {
        return;
    };
    let engines: Vec<Arc<vmm::dsm::Dsm>> = (0..2)
        .map(|me| match vmm::dsm::Dsm::new(16 * 4096, me, 2) {
            Ok(d) => Arc::new(d),
            Err(e) => panic!("DSM engine: {e} ({:?})", std::error::Error::source(&e)),
        })
        .collect();
    let (tx, rx) = std::sync::mpsc::channel::<(u16, u16, Vec<u8>)>();
    for (me, d) in engines.iter().enumerate() {
        d.set_sender(Arc::new(Pipe(Mutex::new(tx.clone()), me as u16)));
        d.peer_up(1 - me as u16);
    }
    let peers = engines.clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let delivery = std::thread::spawn(move || {
        while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok((from, to, payload)) = rx.recv_timeout(std::time::Duration::from_millis(50)) {
                peers[to as usize].receive(from, &payload);
            }
        }
    });
    let threads: Vec<_> = engines.iter().map(|d| d.start().unwrap()).collect();
    #[rustfmt::skip]
    let code: Vec<u8> = [
        &[0x48, 0xbb][..], &TINY_WINDOW.to_le_bytes(),    // mov rbx, TINY_WINDOW
        &[0x48, 0xc7, 0xc1], &ITERS.to_le_bytes(),        // mov rcx, ITERS
        &[0xf0, 0x48, 0xff, 0x03],                        // 1: lock inc qword [rbx]
        &[0x48, 0xff, 0xc9],                              //    dec rcx
        &[0x75, 0xf7],                                    //    jnz 1b
        &[0xf0, 0x48, 0xff, 0x43, 0x08],                  // lock inc qword [rbx + 8]
        &[0xf3, 0x90],                                    // 2: pause
        &[0x48, 0x8b, 0x43, 0x08],                        //    mov rax, [rbx + 8]
        &[0x48, 0x83, 0xf8, 0x02],                        //    cmp rax, 2
        &[0x75, 0xf4],                                    //    jne 2b
        &[0x48, 0x8b, 0x03],                              // mov rax, [rbx]
        &[0x48, 0x89, 0x04, 0x25, 0x00, 0x20, 0x00, 0x00],// mov [0x2000], rax
        &[0x66, 0xba, 0x01, 0x05],                        // mov dx, 0x501
        &[0xb0, 0xd0, 0xee],                              // mov al, 0xd0; out dx, al
        &[0xf4],                                          // hlt
    ].concat();
    let runners: Vec<_> = [t0, t1]
        .into_iter()
        .zip(&engines)
        .map(|(mut t, d)| {
            let (host, len) = d.backing();
            // SAFETY: the engine (and its backing memory) outlives the VM: the runner thread
            // returns the VM, which is dropped before the engines.
            unsafe { t._vm.register_slot(1, TINY_WINDOW, host, len) }.unwrap();
            t.mem.write_slice(&code, GuestAddress(0x10_0000)).unwrap();
            start_long_mode(&t, |_| {});
            std::thread::spawn(move || {
                let seen = run_to_done(&mut t);
                (t, seen)
            })
        })
        .collect();
    let mut results = vec![];
    for r in runners {
        let (t, seen) = r.join().unwrap();
        assert!(
            seen.iter().all(|e| *e == VcpuEmulation::Handled),
            "{seen:?}"
        );
        results.push(t.mem.read_obj::<u64>(GuestAddress(0x2000)).unwrap());
        drop(t);
    }
    for d in &engines {
        d.shutdown();
    }
    for t in threads.into_iter().flatten() {
        t.join().unwrap();
    }
    let stats: Vec<_> = engines.iter().map(|d| d.stats()).collect();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    delivery.join().unwrap();
    drop(tx);
    println!("final values {results:?}; engine stats {stats:#?}");
    assert_eq!(results, vec![2 * u64::from(ITERS); 2]);
    assert!(stats
        .iter()
        .all(|s| s.bad_messages == 0 && s.lost_pages == 0));
    assert!(
        stats[1].pages_in > 0,
        "the page reached VM 1 through the engines"
    );
}
