#!/usr/bin/env python3
# Host check of hash_rows_tc_kernel's index math (include/lshattn/executor/cuda/hash.cuh),
# no GPU needed: the split's and stage()'s shared-memory placement (swizzled 16-byte chunks),
# the ldmatrix addresses against the PTX fragment layouts of mma.m16n8k16 (every A and B
# element must be the row/plane and k the accumulator slot stands for), and the epilogue's
# bit words and code extraction for K = 1..32. Mirror any change of the kernel's layout here.
# Usage: python3 tools/check_tc_hash_layout.py  (prints ok or fails an assert)
TT, TP, KC, depth, WP, WT = 128, 80, 64, 128, 40, 32
CH, XC = KC // 8, depth // 8
import random

def check(nkc):
    xs = {}  # 16-bit element address -> (part,row,k)
    for tid in range(256):
        lr, lh = tid >> 1, tid & 1
        for kc in range(nkc):
            for q in range(4):
                for i in range(8):
                    k = kc * KC + lh * 32 + q * 8 + i
                    ch = kc * CH + lh * 4 + q
                    phys = (lr * XC + (ch ^ (lr & 7))) * 8
                    for part in range(2):
                        addr = part * TT * depth + phys + i
                        assert addr not in xs
                        xs[addr] = (part, lr, k)
    for c in range(2 * nkc):
        kc = c % nkc
        ws = {}
        for tid in range(256):
            for e in range(tid, 2 * TP * CH, 256):
                part, rem = e // (TP * CH), e % (TP * CH)
                p, ch = rem // CH, rem % CH
                dst = ((part * TP + p) * CH + (ch ^ (p & 7))) * 8
                for i in range(8):
                    assert dst + i not in ws
                    ws[dst + i] = (part, p, kc * KC + ch * 8 + i)
        assert len(ws) == 2 * TP * KC
        for warp in range(8):
            wm, wn = warp & 3, warp >> 2
            for ks in range(KC // 16):
                # ldmatrix: matrix i's row j address from lane 8i + j; lane l gets row l/4, cols 2(l%4)+{0,1}
                def ldsm(addr_of_lane, nmat, mem):
                    regs = {}
                    for lane in range(32):
                        for mtx in range(nmat):
                            base = addr_of_lane(8 * mtx + (lane >> 2))
                            regs[(lane, mtx)] = (mem[base + 2 * (lane & 3)], mem[base + 2 * (lane & 3) + 1])
                    return regs
                ax = {}
                for mi in range(2):
                    for part in range(2):
                        def a_addr(l, mi=mi, part=part):
                            row = wm * WT + mi * 16 + (l & 15); ch = kc * CH + 2 * ks + (l >> 4)
                            return part * TT * depth + (row * XC + (ch ^ (row & 7))) * 8
                        ax[(mi, part)] = ldsm(a_addr, 4, xs)
                bfr = {}
                for jp in range(3):
                    for part in range(2):
                        if jp < 2:
                            def b_addr(l, jp=jp, part=part):
                                m = l >> 3
                                pr = wn * WP + jp * 16 + (m >> 1) * 8 + (l & 7); ch = 2 * ks + (m & 1)
                                return ((part * TP + pr) * CH + (ch ^ (pr & 7))) * 8
                            r = ldsm(b_addr, 4, ws)
                            for lane in range(32):
                                for nn in range(2):
                                    bfr[(2 * jp + nn, part, lane)] = (r[(lane, 2 * nn)], r[(lane, 2 * nn + 1)])
                        else:
                            def b_addr(l, part=part):
                                m = l >> 3
                                pr = wn * WP + 32 + (l & 7); ch = 2 * ks + (m & 1)
                                return ((part * TP + pr) * CH + (ch ^ (pr & 7))) * 8
                            r = ldsm(b_addr, 2, ws)
                            for lane in range(32):
                                bfr[(4, part, lane)] = (r[(lane, 0)], r[(lane, 1)])
                # mma semantics: C[i][j] += sum_k A[i][k] B[k][j]; reconstruct A, B from fragments
                for mi in range(2):
                    for part in range(2):
                        A = {}
                        for lane in range(32):
                            g, t4 = lane >> 2, lane & 3
                            for reg, (ro, ko) in enumerate([(0, 0), (8, 0), (0, 8), (8, 8)]):
                                for h in range(2):
                                    A[(g + ro, 2 * t4 + ko + h)] = ax[(mi, part)][(lane, reg)][h]
                        for (i, k), v in A.items():
                            assert v == (part, wm * WT + mi * 16 + i, kc * KC + ks * 16 + k), (v, i, k)
                for nt in range(5):
                    for part in range(2):
                        for lane in range(32):
                            g, t4 = lane >> 2, lane & 3
                            for reg in range(2):
                                for h in range(2):
                                    k = 2 * t4 + 8 * reg + h
                                    assert bfr[(nt, part, lane)][reg][h] == (part, wn * WP + nt * 8 + g, kc * KC + ks * 16 + k)
    return True

def epilogue(K, np_, seed):
    rnd = random.Random(seed)
    truth = {(row, p): rnd.random() < 0.5 for row in range(TT) for p in range(TP)}
    bt = [0] * (TT * 4)
    for warp in range(8):
        wm, wn = warp & 3, warp >> 2
        mlo = {}; mhi = {}
        for lane in range(32):
            g, t4 = lane >> 2, lane & 3
            for ri in range(4):
                lo = hi = 0
                for nt in range(5):
                    for cbit in range(2):
                        mi, e = ri >> 1, (ri & 1) * 2 + cbit
                        row = wm * WT + mi * 16 + g + (e >> 1) * 8
                        col = wn * WP + nt * 8 + 2 * t4 + (e & 1)
                        assert row == wm * WT + (ri >> 1) * 16 + g + (ri & 1) * 8
                        if truth[(row, col)]:
                            bit = 1 << ((nt & 3) * 8 + 2 * t4 + cbit)
                            if nt < 4: lo |= bit
                            else: hi |= bit
                        idx = (mi * 5 + nt) * 4 + e
                        assert (idx // 20, (idx >> 2) % 5, idx & 3) == (mi, nt, e)
                mlo[(lane, ri)] = lo; mhi[(lane, ri)] = hi
        for lane in range(32):  # the quad's masks ORed (shfl_xor 1, 2); lane t4 stores row ri = t4
            g, t4 = lane >> 2, lane & 3
            q0 = lane & ~3
            lo = 0; hi = 0
            for l2 in range(q0, q0 + 4):
                lo |= mlo[(l2, t4)]; hi |= mhi[(l2, t4)]
            row = wm * WT + (t4 >> 1) * 16 + g + (t4 & 1) * 8
            w = row * 4
            if wn == 0:
                bt[w] |= lo; bt[w + 1] |= hi
            else:
                bt[w + 1] |= (lo << 8) & 0xffffffff; bt[w + 2] |= (lo >> 24) | (hi << 8)
    for row in range(TT):
        for p in range(TP):
            assert ((bt[row * 4 + (p >> 5)] >> (p & 31)) & 1) == truth[(row, p)], (row, p)
    ntab = np_ // K
    for i in range(TT):
        for lt in range(ntab):
            p = lt * K; q, s = p >> 5, p & 31
            w = bt[i * 4:i * 4 + 4]
            v = ((w[q + 1] << 32) | w[q]) >> s
            if s and q + 2 < 4: v |= (w[q + 2] << (64 - s)) & ((1 << 64) - 1)
            v &= (1 << K) - 1
            want = sum(1 << b for b in range(K) if truth[(i, p + b)])
            assert v == want
    return True

for nkc in (1, 2):
    check(nkc)
for K in (1, 3, 7, 10, 13, 16, 20, 32):
    epilogue(K, (80 // K) * K, K)
print("ok")
