/*
 * A stand-in for Windows' bcryptprimitives.dll, which Wine 8 lacks.
 *
 * Go 1.22 and later draw random bytes from bcryptprimitives.dll!ProcessPrng
 * and stop at start when the DLL is missing, so no Go program (and no Go
 * test binary) runs under Wine 8 without it. This DLL exports ProcessPrng
 * and fills the buffer from BCryptGenRandom with the system RNG, which Wine
 * implements. It is for tests under Wine only; it is built from this source
 * by `go run mage.go wintest` and never committed as a binary.
 *
 * Build: x86_64-w64-mingw32-gcc -shared -O2 -s -o bcryptprimitives.dll \
 *        bcryptprimitives.c bcryptprimitives.def -lbcrypt
 */
#include <windows.h>
#include <bcrypt.h>

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    /* BCryptGenRandom takes a ULONG length; SIZE_T may be wider. */
    while (len > 0) {
        ULONG n = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (!BCRYPT_SUCCESS(BCryptGenRandom(NULL, data, n, BCRYPT_USE_SYSTEM_PREFERRED_RNG)))
            return FALSE;
        data += n;
        len -= n;
    }
    return TRUE;
}
