// CGuestAtomics: the atomic read-modify-writes on guest memory that Swift cannot express
// on a raw pointer (the standard library's Atomic lives in its own storage only). Used by
// GuestMemory alone, which checks bounds and alignment before calling; nothing else here.
#ifndef CGUESTATOMICS_H
#define CGUESTATOMICS_H

#include <stdbool.h>
#include <stdint.h>

/// 8-byte compare-and-exchange (lock cmpxchg). On failure *expected holds the value found.
static inline bool cga_compare_exchange_64(void *address, uint64_t *expected, uint64_t desired) {
    return __atomic_compare_exchange_n((uint64_t *)address, expected, desired, false,
                                       __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}

/// 16-byte compare-and-exchange: exactly the guest's `lock cmpxchg16b`, done by the host CPU
/// on the same memory, so it is atomic against the guest's other vCPUs. `address` must be
/// 16-byte aligned. On failure *expected_low/high hold the value found.
static inline bool cga_compare_exchange_128(void *address, uint64_t *expected_low, uint64_t *expected_high,
                                            uint64_t desired_low, uint64_t desired_high) {
#if defined(__x86_64__)
    bool exchanged;
    __asm__ __volatile__("lock cmpxchg16b %1"
                         : "=@ccz"(exchanged), "+m"(*(volatile __int128 *)address),
                           "+a"(*expected_low), "+d"(*expected_high)
                         : "b"(desired_low), "c"(desired_high)
                         : "memory");
    return exchanged;
#else
    unsigned __int128 expected = ((unsigned __int128)*expected_high << 64) | *expected_low;
    unsigned __int128 desired = ((unsigned __int128)desired_high << 64) | desired_low;
    bool exchanged = __atomic_compare_exchange_n((unsigned __int128 *)address, &expected, desired, false,
                                                 __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    *expected_low = (uint64_t)expected;
    *expected_high = (uint64_t)(expected >> 64);
    return exchanged;
#endif
}

#endif
