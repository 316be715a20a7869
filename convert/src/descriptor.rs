//! Placeholder: libvirt XML and OVF (filled in by the descriptor work).
