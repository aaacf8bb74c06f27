// CKVM has no code of its own: see include/CKVM.h.
