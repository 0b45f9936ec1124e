//! Reads struct field offsets from the running kernel's BTF (`/sys/kernel/btf/vmlinux`), so the
//! eBPF programs walk `task_struct`, `dentry` and friends at the offsets of this kernel build,
//! never at offsets compiled in for another one.
//!
//! Only what that needs is parsed: the type section's records (to skip them correctly) and the
//! members of structs and unions, with anonymous members searched through, as the kernel nests
//! many fields in anonymous unions. aya-obj parses BTF too, but keeps struct members private.

use skiff_ebpf_common::KernelOffsets;
use std::collections::HashMap;
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

struct Type {
    kind: u32,
    name: u32,
    /// The referenced type, for typedefs and qualifiers.
    referenced: u32,
    /// (name, type, offset in bits), for structs and unions.
    members: Vec<(u32, u32, u32)>,
}

/// The types of a BTF blob, by id (id 0 is `void`).
pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
    structs: HashMap<String, u32>,
}

impl Btf {
    /// Parses the kernel's BTF.
    pub fn load(path: &Path) -> Result<Self, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&data)
    }

    /// Parses a little-endian BTF blob.
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        let u16_at = |at: usize| -> Result<u16, BtfError> {
            data.get(at..at + 2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
                .ok_or(BtfError::Malformed("truncated"))
        };
        let u32_at = |at: usize| -> Result<u32, BtfError> {
            data.get(at..at + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or(BtfError::Malformed("truncated"))
        };
        if u16_at(0)? != MAGIC {
            return Err(BtfError::Malformed("bad magic (or big-endian)"));
        }
        let header_len = u32_at(4)? as usize;
        let (type_off, type_len) = (u32_at(8)? as usize, u32_at(12)? as usize);
        let (str_off, str_len) = (u32_at(16)? as usize, u32_at(20)? as usize);
        let strings = data
            .get(header_len + str_off..header_len + str_off + str_len)
            .ok_or(BtfError::Malformed("string section out of bounds"))?
            .to_vec();
        let mut types = vec![Type {
            kind: 0,
            name: 0,
            referenced: 0,
            members: Vec::new(),
        }];
        let mut at = header_len + type_off;
        let end = at + type_len;
        while at < end {
            let name = u32_at(at)?;
            let info = u32_at(at + 4)?;
            let size_or_type = u32_at(at + 8)?;
            at += 12;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let bitfields = info >> 31 == 1;
            let mut members = Vec::new();
            at += match kind {
                1 | 14 | 17 => 4, // int, var, decl_tag
                3 => 12,          // array
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let member = at + i * 12;
                        let offset = u32_at(member + 8)?;
                        let offset = if bitfields {
                            offset & 0xff_ffff
                        } else {
                            offset
                        };
                        members.push((u32_at(member)?, u32_at(member + 4)?, offset));
                    }
                    vlen * 12
                }
                6 | 13 => vlen * 8,   // enum, func_proto
                15 | 19 => vlen * 12, // datasec, enum64
                2 | 7..=12 | 16 | KIND_TYPE_TAG => 0,
                _ => return Err(BtfError::Malformed("unknown type kind")),
            };
            types.push(Type {
                kind,
                name,
                referenced: size_or_type,
                members,
            });
        }
        let mut btf = Self {
            types,
            strings,
            structs: HashMap::new(),
        };
        for (id, ty) in btf.types.iter().enumerate() {
            if ty.kind == KIND_STRUCT && ty.name != 0 && !ty.members.is_empty() {
                let name = btf.string(ty.name).to_string();
                btf.structs.entry(name).or_insert(id as u32);
            }
        }
        Ok(btf)
    }

    fn string(&self, offset: u32) -> &str {
        let bytes = self.strings.get(offset as usize..).unwrap_or_default();
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        std::str::from_utf8(&bytes[..end]).unwrap_or("")
    }

    /// The struct or union `id` names, through typedefs and qualifiers.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        loop {
            let ty = self.types.get(id as usize)?;
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
        for &(name, member_type, offset) in &ty.members {
            if name == 0 {
                let inner = self.resolve(member_type)?;
                if let Some(bits) = self.member_bits(inner, field) {
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
        let id = self
            .structs
            .get(name)
            .ok_or_else(|| BtfError::NoStruct(name.to_string()))?;
        let ty = &self.types[*id as usize];
        self.member_bits(ty, field)
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
            Btf::parse(b"not btf at all, not at all"),
            Err(BtfError::Malformed(_))
        ));
    }
}
