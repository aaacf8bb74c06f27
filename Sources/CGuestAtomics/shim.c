// Everything in CGuestAtomics is inline in its header; SwiftPM wants a source file.
#include "CGuestAtomics.h"
