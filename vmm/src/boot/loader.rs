//! Loading the kernel, initrd and command line, and filling in the zero page.
//!
//! Both an uncompressed ELF `vmlinux` and a `bzImage` are accepted; the format is told by the
//! file's magic, not its name. Either way the guest starts at the kernel's 64-bit entry point with
//! `rsi` pointing at the zero page.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::{self, bzimage::BzImage, elf::Elf, KernelLoader};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::layout::{
    BZIMAGE_LOAD_ADDR, CMDLINE_ADDR, HIMEM_START, INITRD_ADDR_MAX_DEFAULT, MMIO_GAP_START,
    ZERO_PAGE_ADDR,
};
use super::memory::E820Entry;

/// Errors loading the guest's boot images.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    #[error("cannot open {0}")]
    Open(String, #[source] std::io::Error),
    #[error("{0} is neither an ELF vmlinux nor a bzImage")]
    UnknownFormat(String),
    #[error("cannot load kernel {0}")]
    Kernel(String, #[source] loader::Error),
    #[error("initrd of {size} bytes does not fit in guest memory below {limit:#x}")]
    InitrdTooLarge { size: u64, limit: u64 },
    #[error("cannot read initrd {0}")]
    Initrd(String, #[source] vm_memory::GuestMemoryError),
    #[error("cannot write the kernel command line")]
    Cmdline(#[source] loader::Error),
    #[error("invalid kernel command line")]
    CmdlineInvalid(#[source] linux_loader::cmdline::Error),
    #[error("cannot write the zero page")]
    ZeroPage(#[source] vm_memory::GuestMemoryError),
    #[error("too many e820 entries ({0})")]
    TooManyE820(usize),
}

/// Kernel image formats the loader accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    Elf,
    BzImage,
}

/// What the vCPU needs to start the loaded kernel.
#[derive(Debug, Clone, Copy)]
pub struct BootEntry {
    /// 64-bit entry point.
    pub entry: GuestAddress,
    /// Zero page address, for `rsi`.
    pub zero_page: GuestAddress,
}

/// Tells a kernel image's format from its first bytes.
pub fn detect_format(file: &mut File) -> std::io::Result<Option<KernelFormat>> {
    let mut head = [0u8; 0x206];
    file.seek(SeekFrom::Start(0))?;
    let n = read_up_to(file, &mut head)?;
    file.seek(SeekFrom::Start(0))?;
    if n >= 4 && head[..4] == *b"\x7fELF" {
        return Ok(Some(KernelFormat::Elf));
    }
    if n >= 0x206 && head[0x202..0x206] == *b"HdrS" {
        return Ok(Some(KernelFormat::BzImage));
    }
    Ok(None)
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Everything needed to load a guest.
pub struct BootImages<'a> {
    pub kernel: &'a Path,
    pub initrd: Option<&'a Path>,
    pub cmdline: &'a str,
    pub e820: &'a [E820Entry],
}

/// Loads kernel, initrd and command line into `mem` and writes the zero page.
pub fn load(mem: &GuestMemoryMmap, images: &BootImages<'_>) -> Result<BootEntry, LoaderError> {
    let kname = images.kernel.display().to_string();
    let mut kfile = File::open(images.kernel).map_err(|e| LoaderError::Open(kname.clone(), e))?;
    let format = detect_format(&mut kfile)
        .map_err(|e| LoaderError::Open(kname.clone(), e))?
        .ok_or_else(|| LoaderError::UnknownFormat(kname.clone()))?;
    let (result, entry) = match format {
        KernelFormat::Elf => {
            let r = Elf::load(mem, None, &mut kfile, Some(GuestAddress(HIMEM_START)))
                .map_err(|e| LoaderError::Kernel(kname.clone(), e))?;
            let entry = r.kernel_load;
            (r, entry)
        }
        KernelFormat::BzImage => {
            let r = BzImage::load(
                mem,
                Some(GuestAddress(BZIMAGE_LOAD_ADDR)),
                &mut kfile,
                Some(GuestAddress(HIMEM_START)),
            )
            .map_err(|e| LoaderError::Kernel(kname.clone(), e))?;
            // The 64-bit entry point `startup_64` is 0x200 bytes into the protected-mode kernel.
            let entry = r.kernel_load.unchecked_add(0x200);
            (r, entry)
        }
    };
    let mut params = boot_params::default();
    if let Some(hdr) = result.setup_header {
        params.hdr = hdr;
    }
    let kernel_end = result.kernel_load.raw_value() + result.kernel_end;
    write_cmdline(mem, images.cmdline, &mut params)?;
    if let Some(initrd) = images.initrd {
        load_initrd(mem, initrd, kernel_end, &mut params)?;
    }
    fill_header(&mut params);
    fill_e820(&mut params, images.e820)?;
    mem.write_obj(params, GuestAddress(ZERO_PAGE_ADDR))
        .map_err(LoaderError::ZeroPage)?;
    Ok(BootEntry {
        entry,
        zero_page: GuestAddress(ZERO_PAGE_ADDR),
    })
}

fn write_cmdline(
    mem: &GuestMemoryMmap,
    line: &str,
    params: &mut boot_params,
) -> Result<(), LoaderError> {
    let mut cmdline = linux_loader::cmdline::Cmdline::new(crate::config::MAX_CMDLINE_LEN)
        .map_err(LoaderError::CmdlineInvalid)?;
    cmdline
        .insert_str(line)
        .map_err(LoaderError::CmdlineInvalid)?;
    loader::load_cmdline(mem, GuestAddress(CMDLINE_ADDR), &cmdline)
        .map_err(LoaderError::Cmdline)?;
    params.hdr.cmd_line_ptr = CMDLINE_ADDR as u32;
    params.hdr.cmdline_size = line.len() as u32 + 1;
    Ok(())
}

/// Places the initrd as high as allowed in low RAM, above the kernel.
fn load_initrd(
    mem: &GuestMemoryMmap,
    path: &Path,
    kernel_end: u64,
    params: &mut boot_params,
) -> Result<(), LoaderError> {
    let name = path.display().to_string();
    let mut file = File::open(path).map_err(|e| LoaderError::Open(name.clone(), e))?;
    let size = file
        .seek(SeekFrom::End(0))
        .and_then(|s| file.seek(SeekFrom::Start(0)).map(|_| s))
        .map_err(|e| LoaderError::Open(name.clone(), e))?;
    let addr_max = match params.hdr.initrd_addr_max {
        0 => INITRD_ADDR_MAX_DEFAULT,
        m => u64::from(m),
    };
    let limit = (mem.last_addr().raw_value() + 1)
        .min(MMIO_GAP_START)
        .min(addr_max + 1);
    let start = limit
        .checked_sub(size)
        .map(|s| s & !0xfff)
        .filter(|s| *s >= kernel_end)
        .ok_or(LoaderError::InitrdTooLarge { size, limit })?;
    mem.read_exact_volatile_from(GuestAddress(start), &mut file, size as usize)
        .map_err(|e| LoaderError::Initrd(name, e))?;
    params.hdr.ramdisk_image = start as u32;
    params.hdr.ramdisk_size = size as u32;
    Ok(())
}

/// Fields of the setup header a boot loader must set (Documentation/x86/boot.rst).
fn fill_header(params: &mut boot_params) {
    const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
    const KERNEL_HDR_MAGIC: u32 = 0x5372_6448; // "HdrS"
    const KERNEL_LOADER_OTHER: u8 = 0xff;
    const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x100_0000;
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.header = KERNEL_HDR_MAGIC;
    if params.hdr.kernel_alignment == 0 {
        params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT_BYTES;
    }
}

fn fill_e820(params: &mut boot_params, map: &[E820Entry]) -> Result<(), LoaderError> {
    if map.len() > params.e820_table.len() {
        return Err(LoaderError::TooManyE820(map.len()));
    }
    for (slot, e) in params.e820_table.iter_mut().zip(map) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: e.kind as u32,
        };
    }
    params.e820_entries = map.len() as u8;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn temp_file(name: &str, bytes: &[u8]) -> (std::path::PathBuf, File) {
        let path = std::env::temp_dir().join(format!("vmm-loader-{}-{name}", std::process::id()));
        let mut f = File::create(&path).unwrap();
        f.write_all(bytes).unwrap();
        (path.clone(), File::open(path).unwrap())
    }

    #[test]
    fn format_is_told_by_magic() {
        let (p1, mut f) = temp_file("elf", b"\x7fELF\x02\x01\x01");
        assert_eq!(detect_format(&mut f).unwrap(), Some(KernelFormat::Elf));
        let mut bz = vec![0u8; 0x300];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        let (p2, mut f) = temp_file("bz", &bz);
        assert_eq!(detect_format(&mut f).unwrap(), Some(KernelFormat::BzImage));
        let (p3, mut f) = temp_file("junk", b"not a kernel");
        assert_eq!(detect_format(&mut f).unwrap(), None);
        for p in [p1, p2, p3] {
            std::fs::remove_file(p).unwrap();
        }
    }

    #[test]
    fn corrupt_kernels_give_errors_not_panics() {
        let mem = super::super::memory::create_guest_memory(64 << 20).unwrap();
        let e820 = super::super::memory::e820_map(64 << 20, 0);
        let mut truncated_elf = b"\x7fELF\x02\x01\x01\x00".to_vec();
        truncated_elf.resize(100, 0xff);
        let mut bad_bz = vec![0u8; 0x1000];
        bad_bz[0x202..0x206].copy_from_slice(b"HdrS");
        for (name, bytes) in [
            ("telf", truncated_elf),
            ("bbz", bad_bz),
            ("junk2", b"junk".to_vec()),
        ] {
            let (path, _) = temp_file(name, &bytes);
            let images = BootImages {
                kernel: &path,
                initrd: None,
                cmdline: "x",
                e820: &e820,
            };
            assert!(load(&mem, &images).is_err(), "{name} must not load");
            std::fs::remove_file(path).unwrap();
        }
    }

    #[test]
    fn initrd_is_placed_at_top_of_low_ram_page_aligned() {
        let mem = super::super::memory::create_guest_memory(64 << 20).unwrap();
        let (path, _) = temp_file("initrd", &[7u8; 10000]);
        let mut params = boot_params::default();
        load_initrd(&mem, &path, 0x200_0000, &mut params).unwrap();
        let start = u64::from(params.hdr.ramdisk_image);
        assert_eq!(start % 4096, 0);
        assert!(start + 10000 <= 64 << 20);
        let size = params.hdr.ramdisk_size;
        assert_eq!(size, 10000);
        let v: u8 = mem.read_obj(GuestAddress(start + 9999)).unwrap();
        assert_eq!(v, 7);
        // An initrd that would overlap the kernel is refused.
        assert!(matches!(
            load_initrd(&mem, &path, (64 << 20) - 100, &mut params),
            Err(LoaderError::InitrdTooLarge { .. })
        ));
        std::fs::remove_file(path).unwrap();
    }
}
