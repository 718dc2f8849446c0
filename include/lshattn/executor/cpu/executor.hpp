#pragma once
// The CPU executor's decode step (cpu_policy::decode). Same semantics as the
// reference executor (executor/reference.hpp): per KV head a sample set from
// the estimator, then per query head the exact part over [0, begin) U [end,
// tokens) merged with the Horvitz-Thompson part over the sample, but in fp32
// SIMD kernels on a thread pool:
//
//   A. per (request, KV head): widen the group's queries; draw the sample
//      (estimator::sample, or for lsh on a cpu_index hash the queries with
//      the GEMM kernel);
//   B. lsh on a cpu_index: per (request, KV head, 64K-token block, query
//      head) one bucket walk (cpu_index::walk_block), so that a batch of one
//      request still has 4 x 8 x blocks tasks; the last walk of a block to
//      finish merges the group's hits into one union with a per-head
//      membership mask (cpu_index::merge_hits);
//   C. attention jobs (dense chunks of 4096 tokens, sample chunks of 1024
//      rows): each key and value row read once for the group, online
//      softmax in fp32, one partial state per job;
//   D. per query head: merge the partial states in float64 (core/state.hpp),
//      write the output and the LSE.
// Job boundaries do not depend on the thread count, so results do not either.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <memory>
#include <limits>
#include <type_traits>
#include <vector>

#include "lshattn/core/state.hpp"
#include "lshattn/estimator/exact.hpp"
#include "lshattn/estimator/lsh.hpp"
#include "lshattn/estimator/sample.hpp"
#include "lshattn/executor/cpu/index.hpp"
#include "lshattn/executor/cpu/kernels.hpp"
#include "lshattn/executor/cpu/policy.hpp"
#include "lshattn/executor/request.hpp"

namespace lshattn::executor {

namespace cpu_detail {

inline constexpr std::size_t dense_chunk = 4096;   // tokens per dense job
// Rows per sampled job: a union of 8K rows per KV head is then 16 jobs, so a
// batch of one request spreads over 16+ threads in pieces of ~25 us.
inline constexpr std::size_t sample_chunk = 512;
inline constexpr std::size_t max_group = 64;       // heads per attention job (membership masks are 64-bit)

/// One (request, KV head) of a decode step and what phase A produced for it.
struct unit {
  std::size_t req = 0, kv = 0, group = 0, dim = 0, begin = 0, end = 0;
  bool fast = false;                 // lsh on a cpu_index
  std::vector<float> q;              // [group][dpad]
  std::vector<float> q_norm;         // [group]
  std::vector<std::uint32_t> codes;  // fast: [group][L]
  std::vector<std::uint32_t> ids;    // generic sample: ids
  std::vector<float> log_pi;         // generic sample: [group][ids]
  std::size_t union_keys = 0, sampled_keys = 0;
};

/// One retrieval block of a fast unit and its union.
struct block_job {
  std::size_t unit = 0, block = 0;
  std::vector<std::uint32_t> ids;
  std::vector<std::uint64_t> member;
  std::vector<std::vector<std::uint16_t>> hits;  // [group]: each query head's walk
};

/// One attention job; its state lives at state[slot ..].
struct attend_part {
  std::size_t unit = 0, head0 = 0, heads = 0;  // query heads [head0, head0 + heads) of the unit's group
  correction mode = correction::none;
  std::size_t first = 0, count = 0;  // none: tokens [first, first + count); otherwise entries of a list
  std::size_t block = 0;             // lsh: which block_job
  std::size_t slot = 0;
};

/// Reused across decode calls of one calling thread: no allocation once warm.
struct decode_workspace {
  std::vector<unit> units;
  std::vector<block_job> blocks;
  std::vector<std::size_t> walk_block;  // walk task t: block walk_block[t], head t - walk_first[that block]
  std::vector<std::size_t> walk_first;
  std::unique_ptr<std::atomic<std::size_t>[]> pending;  // per block: walks not yet finished
  std::size_t pending_size = 0;
  std::vector<attend_part> parts;
  std::vector<std::size_t> unit_parts;  // parts of unit u: [unit_parts[u], unit_parts[u + 1])
  std::vector<float> state;
  static decode_workspace& local() {
    thread_local decode_workspace w;
    return w;
  }
};

}  // namespace cpu_detail

template <class Est, element_type TQ, element_type TK, element_type TV, class I>
void cpu_policy::decode(const Est& est, const decode_params& p,
                        std::span<const decode_request<TQ, TK, TV, I>> batch) const {
  using namespace cpu_detail;
  for (const auto& r : batch) {
    lshattn::detail::validate_request(est, r, p);
    LSHATTN_REQUIRE(r.std_error.empty() && r.ess.empty(), unsupported, "std_error",
                    "error bars (std_error, ess) are computed by the reference executor only");
  }
  const kernel_table& k = kernels();  // throws (unsupported) before anything is written
  constexpr bool exact_est = std::is_same_v<Est, estimator::exact>;
  constexpr bool lsh_on_cpu_index = std::is_same_v<Est, estimator::lsh> && std::is_same_v<I, cpu_index>;
  decode_workspace& ws = decode_workspace::local();

  // Units, one per (request, KV head).
  std::size_t n_units = 0;
  for (const auto& r : batch) n_units += r.keys.heads;
  if (ws.units.size() < n_units) ws.units.resize(n_units);
  {
    std::size_t u = 0;
    for (std::size_t ri = 0; ri < batch.size(); ++ri) {
      const auto& r = batch[ri];
      const auto [b, e] = lshattn::detail::sampled_range<Est>(r, p);
      for (std::size_t kh = 0; kh < r.keys.heads; ++kh, ++u) {
        unit& un = ws.units[u];
        un.req = ri;
        un.kv = kh;
        un.group = r.queries.rows / r.keys.heads;
        un.dim = r.queries.cols;
        un.begin = b;
        un.end = e;
        un.fast = false;
        if constexpr (lsh_on_cpu_index)
          un.fast = un.group <= max_group && (est.m == 0 || est.m == r.index->threshold());
        un.union_keys = un.sampled_keys = 0;
      }
    }
  }

  // A. Queries and samples.
  parallel_for(n_units, [&](std::size_t u, std::size_t) {
    unit& un = ws.units[u];
    const auto& r = batch[un.req];
    const std::size_t g = un.group, d = un.dim, dp = padded(d);
    un.q.assign(g * dp, 0.0f);
    un.q_norm.resize(g);
    for (std::size_t h = 0; h < g; ++h) {
      double n2 = 0.0;
      for (std::size_t j = 0; j < d; ++j) {
        const float x = to_float(r.queries(un.kv * g + h, j));
        un.q[h * dp + j] = x;
        n2 += static_cast<double>(x) * x;
      }
      un.q_norm[h] = static_cast<float>(std::sqrt(n2));
    }
    if constexpr (exact_est) {
      un.union_keys = un.end - un.begin;
      un.sampled_keys = g * (un.end - un.begin);
    } else {
      if constexpr (lsh_on_cpu_index) {
        if (un.fast) {
          un.codes.resize(g * static_cast<std::size_t>(r.index->family().tables()));
          r.index->hash_queries(k, un.q.data(), g, un.codes.data());
          return;
        }
      }
      thread_local retrieval_workspace rws;
      thread_local estimator::sample_set set;
      estimator::sample_context<TK, I> ctx{r.keys.head(un.kv), un.begin, un.end,
                                           matrix_view<const float>(un.q.data(), g, d, dp), p.effective_scale(d),
                                           r.index, un.kv, un.req * r.keys.heads + un.kv, &rws};
      est.sample(ctx, set);
      const std::size_t n = set.ids.size();
      un.ids.assign(set.ids.begin(), set.ids.end());
      un.log_pi.resize(g * n);
      std::size_t in = 0;
      for (std::size_t i = 0; i < g * n; ++i) {
        un.log_pi[i] = static_cast<float>(set.log_pi[i]);
        in += set.log_pi[i] != -std::numeric_limits<double>::infinity();
      }
      un.union_keys = n;
      un.sampled_keys = in;
    }
  });

  // B. Retrieval blocks of the fast units.
  std::size_t n_blocks = 0;
  if constexpr (lsh_on_cpu_index) {
    for (std::size_t u = 0; u < n_units; ++u)
      if (ws.units[u].fast) n_blocks += batch[ws.units[u].req].index->retrieval_blocks();
    if (ws.blocks.size() < n_blocks) ws.blocks.resize(n_blocks);
    std::size_t bj = 0;
    for (std::size_t u = 0; u < n_units; ++u) {
      if (!ws.units[u].fast) continue;
      for (std::size_t b = 0; b < batch[ws.units[u].req].index->retrieval_blocks(); ++b, ++bj) {
        ws.blocks[bj].unit = u;
        ws.blocks[bj].block = b;
      }
    }
    if (ws.pending_size < n_blocks) {
      ws.pending = std::make_unique<std::atomic<std::size_t>[]>(n_blocks);
      ws.pending_size = n_blocks;
    }
    ws.walk_block.clear();
    ws.walk_first.resize(n_blocks);
    for (std::size_t j = 0; j < n_blocks; ++j) {
      const std::size_t g = ws.units[ws.blocks[j].unit].group;
      if (ws.blocks[j].hits.size() < g) ws.blocks[j].hits.resize(g);
      ws.pending[j].store(g, std::memory_order_relaxed);
      ws.walk_first[j] = ws.walk_block.size();
      ws.walk_block.insert(ws.walk_block.end(), g, j);
    }
    parallel_for(ws.walk_block.size(), [&](std::size_t t, std::size_t) {
      const std::size_t j = ws.walk_block[t], g = t - ws.walk_first[j];
      block_job& bj = ws.blocks[j];
      const unit& un = ws.units[bj.unit];
      const auto& idx = *batch[un.req].index;
      const int m = est.m > 0 ? est.m : idx.threshold();
      const std::size_t L = static_cast<std::size_t>(idx.family().tables());
      cpu_scratch& s = cpu_scratch::local();
      idx.walk_block(un.kv, bj.block, un.codes.data() + g * L, m, s, bj.hits[g]);
      // The last walk of the block merges (acq_rel: it sees the others' hits).
      if (ws.pending[j].fetch_sub(1, std::memory_order_acq_rel) == 1) {
        bj.ids.clear();
        bj.member.clear();
        idx.merge_hits(bj.block, bj.hits.data(), un.group, s, bj.ids, bj.member);
      }
    });
    for (std::size_t j = 0; j < n_blocks; ++j) {
      unit& un = ws.units[ws.blocks[j].unit];
      un.union_keys += ws.blocks[j].ids.size();
      for (std::uint64_t m : ws.blocks[j].member) un.sampled_keys += static_cast<std::size_t>(__builtin_popcountll(m));
    }
  }

  // C. Attention jobs.
  ws.parts.clear();
  ws.unit_parts.assign(n_units + 1, 0);
  std::size_t slots = 0;
  for (std::size_t u = 0; u < n_units; ++u) {
    ws.unit_parts[u] = ws.parts.size();
    const unit& un = ws.units[u];
    const std::size_t n = batch[un.req].keys.tokens, dp = padded(un.dim);
    for (std::size_t h0 = 0; h0 < un.group; h0 += max_group) {
      const std::size_t hs = std::min(max_group, un.group - h0);
      const auto add = [&](correction mode, std::size_t first, std::size_t count, std::size_t block) {
        for (std::size_t c = 0; c < count; c += mode == correction::none ? dense_chunk : sample_chunk) {
          const std::size_t len = std::min(count - c, mode == correction::none ? dense_chunk : sample_chunk);
          ws.parts.push_back({u, h0, hs, mode, first + c, len, block, slots});
          slots += hs * (dp + 2);
        }
      };
      if (exact_est) {
        add(correction::none, 0, n, 0);
        continue;
      }
      add(correction::none, 0, un.begin, 0);
      add(correction::none, un.end, n - un.end, 0);
      if (un.fast) {
        for (std::size_t j = 0; j < n_blocks; ++j)
          if (ws.blocks[j].unit == u) add(correction::lsh, 0, ws.blocks[j].ids.size(), j);
      } else {
        add(correction::log_pi, 0, un.ids.size(), 0);
      }
    }
  }
  ws.unit_parts[n_units] = ws.parts.size();
  if (ws.state.size() < slots) ws.state.resize(slots);
  parallel_for(ws.parts.size(), [&](std::size_t j, std::size_t) {
    const attend_part& pt = ws.parts[j];
    const unit& un = ws.units[pt.unit];
    const auto& r = batch[un.req];
    const std::size_t dp = padded(un.dim);
    float* st = ws.state.data() + pt.slot;
    attend_job job;
    job.keys = r.keys.row(un.kv, 0);
    job.values = r.values.row(un.kv, 0);
    job.key_stride = r.keys.token_stride;
    job.value_stride = r.values.token_stride;
    job.dim = un.dim;
    job.q = un.q.data() + pt.head0 * dp;
    job.group = pt.heads;
    job.scale = static_cast<float>(p.effective_scale(un.dim));
    job.mode = pt.mode;
    job.acc = st;
    job.mx = st + pt.heads * dp;
    job.sum = job.mx + pt.heads;
    std::fill(job.acc, job.acc + pt.heads * dp, 0.0f);
    std::fill(job.mx, job.mx + pt.heads, -std::numeric_limits<float>::infinity());
    std::fill(job.sum, job.sum + pt.heads, 0.0f);
    job.count = pt.count;
    if (pt.mode == correction::none) {
      job.first = pt.first;
    } else if (pt.mode == correction::log_pi) {
      job.ids = un.ids.data() + pt.first;
      job.log_pi = un.log_pi.data() + pt.head0 * un.ids.size() + pt.first;
      job.log_pi_stride = un.ids.size();
    } else {
      if constexpr (lsh_on_cpu_index) {
        const block_job& bj = ws.blocks[pt.block];
        job.ids = bj.ids.data() + pt.first;
        job.member = bj.member.data() + pt.first;
        job.centre = r.index->padded_mean(un.kv);
        job.q_norm = un.q_norm.data() + pt.head0;
        job.lnu = &r.index->lnu();
      }
    }
    k.attend[static_cast<int>(dtype_of<TK>)][static_cast<int>(dtype_of<TV>)](job);
  });

  // D. Merge the partial states of each query head, in job order; units in
  // parallel (each writes only its own heads' output rows).
  parallel_for(n_units, [&](std::size_t u, std::size_t) {
    const unit& un = ws.units[u];
    const auto& r = batch[un.req];
    const std::size_t d = un.dim, dp = padded(d);
    const std::size_t first_part = ws.unit_parts[u], last = ws.unit_parts[u + 1];
    thread_local std::vector<double> o, o2;
    o.resize(d);
    o2.resize(d);
    for (std::size_t h = 0; h < un.group; ++h) {
      double lse = -std::numeric_limits<double>::infinity();
      std::fill(o.begin(), o.end(), 0.0);
      for (std::size_t j = first_part; j < last; ++j) {
        const attend_part& pt = ws.parts[j];
        if (h < pt.head0 || h >= pt.head0 + pt.heads) continue;
        const std::size_t hh = h - pt.head0;
        const float* st = ws.state.data() + pt.slot;
        const float mx = st[pt.heads * dp + hh], sum = st[pt.heads * dp + pt.heads + hh];
        if (!(sum > 0.0f) && !std::isnan(sum)) continue;  // no row of this job included for h
        const double inv = 1.0 / static_cast<double>(sum);
        for (std::size_t c = 0; c < d; ++c) o2[c] = static_cast<double>(st[hh * dp + c]) * inv;
        merge_state(o.data(), lse, o2.data(), static_cast<double>(mx) + std::log(static_cast<double>(sum)), d);
      }
      const std::size_t qh = un.kv * un.group + h;
      for (std::size_t c = 0; c < d; ++c) r.output(qh, c) = static_cast<float>(o[c]);
      if (!r.lse.empty()) r.lse[qh] = static_cast<float>(lse_in_base(lse, p.base));
    }
  });
  for (std::size_t u = 0; u < n_units; ++u) {
    const unit& un = ws.units[u];
    const auto& r = batch[un.req];
    const std::size_t n = r.keys.tokens;
    if (r.stats) {
      r.stats->dense_keys += un.group * (un.begin + (n - un.end));
      r.stats->sampled_range += un.group * (un.end - un.begin);
      r.stats->sampled_keys += un.sampled_keys;
      r.stats->union_keys += un.union_keys;
    }
  }
}

}  // namespace lshattn::executor
