//! The `.st` file format, version 1 (see `spec/st-file.md`).
