/* For the Windows archive's check under wine only (never shipped): wine 8
 * has no bcryptprimitives.dll, whose ProcessPrng Rust's standard library
 * imports for random bytes. This stand-in answers it from bcrypt.dll's
 * system RNG, as Windows does. */
#include <windows.h>
#include <bcrypt.h>

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
    while (len > 0) {
        ULONG chunk = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (BCryptGenRandom(NULL, data, chunk, BCRYPT_USE_SYSTEM_PREFERRED_RNG) != 0) return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
