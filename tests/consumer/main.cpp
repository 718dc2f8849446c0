// Builds against the installed headers and runs one exact decode step.
#include <lshattn/lshattn.hpp>

#include <cmath>
#include <cstdio>
#include <vector>

int main() {
  using namespace lshattn;
  const std::size_t n = 8, d = 4;
  std::vector<float> k(n * d, 0.5f), v(n * d, 2.0f), q(d, 1.0f), o(d, -1.0f);
  decode_request<float, float> r{matrix_view<const float>(q.data(), 1, d), cache_view<const float>(k.data(), 1, n, d),
                                 cache_view<const float>(v.data(), 1, n, d), nullptr, matrix_view<float>(o.data(), 1, d)};
  decode(reference, estimator::exact{}, decode_params{}, r);
  for (float x : o)
    if (std::fabs(x - 2.0f) > 1e-6f) return std::printf("consumer: wrong output %g\n", x), 1;
  std::printf("consumer: lshattn %d.%d.%d found and working\n", version.major, version.minor, version.patch);
  return 0;
}
