//! Reads struct field offsets from the running kernel's BTF (`/sys/kernel/btf/vmlinux`), so the
//! eBPF programs walk `task_struct`, `dentry` and friends at the offsets of this kernel build,
//! never at offsets compiled in for another one.
//!
//! Only what that needs is parsed: the type section's records (to skip them correctly) and the
//! members of structs and unions, with anonymous members searched through, as the kernel nests
//! many fields in anonymous unions. aya-obj parses BTF too, but keeps struct members private.

use skiff_ebpf_common::KernelOffsets;
use std::path::Path;

/// Where the kernel publishes its BTF.
pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_TYPE_TAG: u32 = 18;

/// Why the offsets could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    #[error("the kernel's BTF has no struct {0}")]
    NoStruct(String),
    #[error("the kernel's BTF has no field {0}")]
    NoField(String),
}

/// A type record's fixed part.
struct Type {
    kind: u32,
    name: u32,
    /// The referenced type, for typedefs and qualifiers.
    referenced: u32,
    /// Members, for structs and unions.
    vlen: usize,
    bitfields: bool,
    /// Where the members start in the blob.
    members_at: usize,
}

/// A BTF blob and where its types are. Types are decoded when looked at, not kept decoded:
/// the kernel's has over 100,000, and a tree of them took 20 MB that the allocator kept for
/// the life of the agent.
pub struct Btf {
    data: Vec<u8>,
    /// Where each type's record starts in `data`, by id (id 0 is `void` and has none).
    types: Vec<usize>,
    /// Where the string section starts in `data`.
    strings: usize,
}

fn u32_at(data: &[u8], at: usize) -> Result<u32, BtfError> {
    data.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(BtfError::Malformed("truncated"))
}

impl Btf {
    /// Parses the kernel's BTF.
    pub fn load(path: &Path) -> Result<Self, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(data)
    }

    /// Parses a little-endian BTF blob: checks its sections and finds where each type is.
    pub fn parse(data: Vec<u8>) -> Result<Self, BtfError> {
        let magic = data.get(..2).map(|b| u16::from_le_bytes([b[0], b[1]]));
        if magic != Some(MAGIC) {
            return Err(BtfError::Malformed("bad magic (or big-endian)"));
        }
        let header_len = u32_at(&data, 4)? as usize;
        let (type_off, type_len) = (u32_at(&data, 8)? as usize, u32_at(&data, 12)? as usize);
        let (str_off, str_len) = (u32_at(&data, 16)? as usize, u32_at(&data, 20)? as usize);
        let strings = header_len + str_off;
        if data.len() < strings + str_len {
            return Err(BtfError::Malformed("string section out of bounds"));
        }
        let mut btf = Self {
            types: vec![0],
            strings,
            data: Vec::new(),
        };
        let mut at = header_len + type_off;
        let end = at + type_len;
        if data.len() < end {
            return Err(BtfError::Malformed("type section out of bounds"));
        }
        while at < end {
            btf.types.push(at);
            let ty = Self::decode(&data, at)?;
            at = ty.members_at
                + match ty.kind {
                    1 | 14 | 17 => 4,                                   // int, var, decl_tag
                    3 => 12,                                            // array
                    KIND_STRUCT | KIND_UNION | 15 | 19 => ty.vlen * 12, // and datasec, enum64
                    6 | 13 => ty.vlen * 8,                              // enum, func_proto
                    2 | 7..=12 | 16 | KIND_TYPE_TAG => 0,
                    _ => return Err(BtfError::Malformed("unknown type kind")),
                };
            if at > end {
                return Err(BtfError::Malformed("type record out of bounds"));
            }
        }
        btf.data = data;
        Ok(btf)
    }

    /// The record at `at`.
    fn decode(data: &[u8], at: usize) -> Result<Type, BtfError> {
        let info = u32_at(data, at + 4)?;
        Ok(Type {
            kind: (info >> 24) & 0x1f,
            name: u32_at(data, at)?,
            referenced: u32_at(data, at + 8)?,
            vlen: (info & 0xffff) as usize,
            bitfields: info >> 31 == 1,
            members_at: at + 12,
        })
    }

    fn ty(&self, id: u32) -> Option<Type> {
        match id {
            0 => None,
            _ => Self::decode(&self.data, *self.types.get(id as usize)?).ok(),
        }
    }

    /// (name, type, offset in bits) of each member of a struct or union.
    fn members(&self, ty: &Type) -> impl Iterator<Item = (u32, u32, u32)> + '_ {
        let (bitfields, members_at) = (ty.bitfields, ty.members_at);
        (0..ty.vlen).filter_map(move |i| {
            let member = members_at + i * 12;
            let offset = u32_at(&self.data, member + 8).ok()?;
            let offset = if bitfields {
                offset & 0xff_ffff
            } else {
                offset
            };
            Some((
                u32_at(&self.data, member).ok()?,
                u32_at(&self.data, member + 4).ok()?,
                offset,
            ))
        })
    }

    fn string(&self, offset: u32) -> &str {
        let bytes = self
            .data
            .get(self.strings + offset as usize..)
            .unwrap_or_default();
        let end = memchr::memchr(0, bytes).unwrap_or(bytes.len());
        std::str::from_utf8(&bytes[..end]).unwrap_or("")
    }

    /// The first struct called `name` with members (a forward declaration has none).
    fn find_struct(&self, name: &str) -> Option<Type> {
        (1..self.types.len() as u32)
            .filter_map(|id| self.ty(id))
            .find(|ty| ty.kind == KIND_STRUCT && ty.vlen > 0 && self.string(ty.name) == name)
    }

    /// The struct or union `id` names, through typedefs and qualifiers.
    fn resolve(&self, mut id: u32) -> Option<Type> {
        loop {
            let ty = self.ty(id)?;
            match ty.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = ty.referenced
                }
                _ => return Some(ty),
            }
        }
    }

    /// Offset in bits of `field` in the struct or union `ty`, searching anonymous members.
    fn member_bits(&self, ty: &Type, field: &str) -> Option<u32> {
        for (name, member_type, offset) in self.members(ty) {
            if name == 0 {
                let inner = self.resolve(member_type)?;
                if let Some(bits) = self.member_bits(&inner, field) {
                    return Some(offset + bits);
                }
            } else if self.string(name) == field {
                return Some(offset);
            }
        }
        None
    }

    /// Offset in bytes of `field` in `struct name`.
    pub fn offset(&self, name: &str, field: &str) -> Result<u32, BtfError> {
        let ty = self
            .find_struct(name)
            .ok_or_else(|| BtfError::NoStruct(name.to_string()))?;
        self.member_bits(&ty, field)
            .map(|bits| bits / 8)
            .ok_or_else(|| BtfError::NoField(format!("{name}.{field}")))
    }

    /// The offsets the eBPF programs need.
    pub fn kernel_offsets(&self) -> Result<KernelOffsets, BtfError> {
        let path_dentry = self.offset("path", "dentry")?;
        Ok(KernelOffsets {
            task_fs: self.offset("task_struct", "fs")?,
            task_files: self.offset("task_struct", "files")?,
            fs_pwd_dentry: self.offset("fs_struct", "pwd")? + path_dentry,
            files_fdt: self.offset("files_struct", "fdt")?,
            fdtable_max_fds: self.offset("fdtable", "max_fds")?,
            fdtable_fd: self.offset("fdtable", "fd")?,
            file_dentry: self.offset("file", "f_path")? + path_dentry,
            dentry_parent: self.offset("dentry", "d_parent")?,
            dentry_name: self.offset("dentry", "d_name")? + self.offset("qstr", "name")?,
            dentry_inode: self.offset("dentry", "d_inode")?,
            dentry_sb: self.offset("dentry", "d_sb")?,
            inode_ino: self.offset("inode", "i_ino")?,
            sb_dev: self.offset("super_block", "s_dev")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_of_the_running_kernel() {
        if !Path::new(VMLINUX).exists() {
            eprintln!("skipping: this kernel publishes no BTF");
            return;
        }
        let btf = Btf::load(Path::new(VMLINUX)).unwrap();
        let offsets = btf.kernel_offsets().unwrap();
        // `struct path { struct vfsmount *mnt; struct dentry *dentry; }` on every 64-bit build.
        assert_eq!(btf.offset("path", "dentry").unwrap(), 8);
        // `struct qstr` starts with the hash/len union, then the name pointer.
        assert_eq!(btf.offset("qstr", "name").unwrap(), 8);
        assert!(offsets.task_fs > 0 && offsets.task_files > 0);
        assert!(offsets.dentry_inode > 0 && offsets.inode_ino > 0);
    }

    #[test]
    fn garbage_is_refused() {
        assert!(matches!(
            Btf::parse(b"not btf at all, not at all".to_vec()),
            Err(BtfError::Malformed(_))
        ));
    }
}
