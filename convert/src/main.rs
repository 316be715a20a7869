//! `p2v-convert`: runs a conversion job (in the appliance VM, or on the host in direct mode).
fn main() {}
