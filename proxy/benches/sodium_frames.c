/* What libzmq's CURVE pays per MESSAGE frame, for comparison with `curve_frames.rs` on the same
 * machine: crypto_box_afternm and crypto_box_open_afternm (libzmq's calls, with NaCl's 32 zero
 * bytes in front) on a precomputed key, for a flags byte plus 64 B, 256 B and 4 KiB.
 *
 *     gcc -O2 -o target/sodium_frames proxy/benches/sodium_frames.c -lsodium && target/sodium_frames
 *
 * Prints nanoseconds per frame (median of 5 rounds) and the system libsodium's version.
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(void) {
    if (sodium_init() < 0) return 1;
    unsigned char pk[32], sk[32], pk2[32], sk2[32], k[32];
    crypto_box_keypair(pk, sk);
    crypto_box_keypair(pk2, sk2);
    if (crypto_box_beforenm(k, pk2, sk) != 0) return 1;
    static unsigned char plain[32 + 4096 + 1], boxed[32 + 4096 + 1];
    const size_t sizes[] = {64, 256, 4096};
    for (int s = 0; s < 3; s++) {
        size_t len = 32 + 1 + sizes[s];
        int iters = (int)(20000000 / (sizes[s] + 64));
        if (iters > 500000) iters = 500000;
        unsigned char nonce[24] = {0};
        memcpy(nonce, "CurveZMQMESSAGEC", 16);
        double seal[5], open[5];
        for (int round = 0; round < 5; round++) {
            double t0 = now();
            for (int i = 0; i < iters; i++) {
                nonce[23] = (unsigned char)i;
                nonce[22] = (unsigned char)(i >> 8);
                crypto_box_afternm(boxed, plain, len, nonce, k);
            }
            double t1 = now();
            for (int i = 0; i < iters; i++) {
                if (crypto_box_open_afternm(plain, boxed, len, nonce, k) != 0) return 1;
            }
            double t2 = now();
            seal[round] = (t1 - t0) / iters * 1e9;
            open[round] = (t2 - t1) / iters * 1e9;
        }
        qsort(seal, 5, sizeof seal[0], cmp);
        qsort(open, 5, sizeof open[0], cmp);
        printf("libsodium %s %zu B: seal %.0f ns, open %.0f ns, seal+open %.0f ns\n",
               sodium_version_string(), sizes[s], seal[2], open[2], seal[2] + open[2]);
    }
    return 0;
}
