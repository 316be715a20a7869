//! modules.dep / modules.builtin (filled in below).
