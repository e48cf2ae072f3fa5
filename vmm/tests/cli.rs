//! The `vmm` command line: bad arguments end with one clear line on stderr and exit status 2,
//! before any VM is created, and never with a panic.

use std::process::Command;

fn vmm(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vmm"))
        .args(args)
        .env("VMM_IMAGE_DIR", "/nonexistent")
        .output()
        .expect("run vmm");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "vmm panicked: {stderr}");
    (out.status.code().unwrap_or(-1), stderr)
}

fn temp(name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("vmm-cli-{}-{name}", std::process::id()));
    std::fs::write(&p, bytes).unwrap();
    p
}

fn assert_one_line_error(args: &[&str], needle: &str) {
    let (code, stderr) = vmm(args);
    assert_eq!(code, 2, "{args:?}: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
    assert!(
        stderr.contains(needle),
        "{args:?}: expected '{needle}' in: {stderr}"
    );
}

#[test]
fn missing_kernel_is_a_one_line_error() {
    let initrd = temp("initrd", b"x");
    let i = initrd.to_str().unwrap();
    assert_one_line_error(
        &["launch", "--kernel", "/no/such/vmlinux", "--initrd", i],
        "cannot read kernel '/no/such/vmlinux'",
    );
}

#[test]
fn corrupt_kernels_are_one_line_errors() {
    let initrd = temp("initrd2", b"x");
    let i = initrd.to_str().unwrap();
    let junk = temp("junk", b"this is not a kernel image at all");
    assert_one_line_error(
        &["launch", "--kernel", junk.to_str().unwrap(), "--initrd", i],
        "neither an ELF vmlinux nor a bzImage",
    );
    let empty = temp("empty", b"");
    assert_one_line_error(
        &["launch", "--kernel", empty.to_str().unwrap(), "--initrd", i],
        "is empty",
    );
    let mut elf = b"\x7fELF\x02\x01\x01\x00".to_vec();
    elf.resize(64, 0xee);
    let bad_elf = temp("badelf", &elf);
    assert_one_line_error(
        &[
            "launch",
            "--kernel",
            bad_elf.to_str().unwrap(),
            "--initrd",
            i,
        ],
        "cannot load kernel",
    );
}

#[test]
fn impossible_sizes_are_one_line_errors() {
    let k = temp("k", b"\x7fELF....");
    let k = k.to_str().unwrap();
    assert_one_line_error(
        &["launch", "--kernel", k, "--initrd", k, "--mem", "1K"],
        "outside the supported range",
    );
    assert_one_line_error(
        &["launch", "--kernel", k, "--initrd", k, "--mem", "lots"],
        "invalid size 'lots'",
    );
    assert_one_line_error(
        &["launch", "--kernel", k, "--initrd", k, "--mem", "5T"],
        "outside the supported range",
    );
    assert_one_line_error(
        &["launch", "--kernel", k, "--initrd", k, "--vcpus", "0"],
        "vCPU count 0",
    );
    assert_one_line_error(
        &["launch", "--kernel", k, "--initrd", k, "--vcpus", "65"],
        "vCPU count 65",
    );
}

#[test]
fn unknown_options_are_usage_errors() {
    let (code, stderr) = vmm(&["launch", "--no-such-option"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--no-such-option"), "{stderr}");
}

/// A minimal ELF "kernel" whose entry point executes `ud2`: with the monitor's boot IDT (no
/// usable vectors) the CPU triple-faults at once.
fn triple_fault_kernel() -> Vec<u8> {
    const ENTRY: u64 = 0x100_0000;
    let mut b = Vec::new();
    b.extend_from_slice(b"\x7fELF\x02\x01\x01\x00");
    b.resize(16, 0);
    b.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    b.extend_from_slice(&0x3eu16.to_le_bytes()); // x86-64
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(&ENTRY.to_le_bytes());
    b.extend_from_slice(&64u64.to_le_bytes()); // program headers right after this header
    b.extend_from_slice(&0u64.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    for v in [64u16, 56, 1, 64, 0, 0] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    b.extend_from_slice(&5u32.to_le_bytes()); // R+X
    for v in [120u64, ENTRY, ENTRY, 2, 2, 0x1000] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&[0x0f, 0x0b]); // ud2
    b
}

#[test]
fn a_triple_fault_ends_with_registers_and_status_125() {
    if !std::path::Path::new("/dev/kvm").exists() {
        eprintln!("SKIPPED: no /dev/kvm on this machine");
        return;
    }
    let kernel = temp("tf-kernel", &triple_fault_kernel());
    let initrd = temp("tf-initrd", b"x");
    let (code, stderr) = vmm(&[
        "launch",
        "--kernel",
        kernel.to_str().unwrap(),
        "--initrd",
        initrd.to_str().unwrap(),
        "--mem",
        "64M",
        "--",
        "true",
    ]);
    assert_eq!(code, 125, "{stderr}");
    assert!(stderr.contains("triple fault"), "{stderr}");
    assert!(stderr.contains("rip=0x0000000001000000"), "{stderr}");
}
