// Every module declares each parameter once (ParameterList::allocate), and parameters() is what
// the optimizer, the gradient reduction and the checkpoint see: a tensor a module holds but does
// not list would silently stay untrained and unsaved. These tests walk every module of a model
// by hand and hold the list to what the modules hold and to the reference's state_dict (names,
// shapes, count; docs/DESIGN.md section 5), and show that the check catches a planted omission
// and a duplicate.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "kernels/error.h"
#include "layers/model.h"
#include "support/tiny_model.h"

namespace tls {
namespace {

// Every part of the architecture, with r = 2 compressed vectors per chunk and 3 layers.
ModelConfig config(bool use_bias) {
  ModelConfig cfg = testing::tiny_training_model(0.0);
  cfg.n_layer = 3;
  cfg.chunk_rank = 2;
  cfg.use_bias = use_bias;
  return cfg;
}

using Shapes = std::map<std::string, std::vector<int64_t>>;

// The reference's state_dict (TransformerLSModel), its tied output weight left out.
Shapes reference_state_dict(const ModelConfig& cfg) {
  const int64_t V = cfg.vocab_size, d = cfg.d_model, H = cfg.n_head, dh = cfg.d_head();
  const int64_t Hr = H * cfg.chunk_rank, di = cfg.d_inner;
  Shapes s = {{"in_emb.weight", {V, d}}, {"out_emb.bias", {V}}};
  for (int64_t l = 0; l < cfg.n_layer; ++l) {
    const std::string a = "layers." + std::to_string(l) + ".attn.";
    for (const char* proj : {"proj_query", "proj_key", "proj_val", "proj_out"}) {
      s[a + proj + ".weight"] = {d, d};
      if (cfg.use_bias) s[a + proj + ".bias"] = {d};
    }
    s[a + "r_net.weight"] = {d, d};
    s[a + "r_net_chunk.weight"] = {d, d};
    s[a + "r_net_chunk.bias"] = {d};
    s[a + "dconv_1.weight"] = {Hr, d};
    s[a + "dconv_1.bias"] = {Hr};
    s[a + "r_w_bias"] = {1, H, 1, 1, dh};
    s[a + "r_r_bias"] = {1, H, 1, dh};
    for (const char* ln : {"dual_ln_win", "dual_ln_dproj"}) {
      s[a + ln + ".weight"] = {d};
      s[a + ln + ".bias"] = {d};
    }
    const std::string layer = "layers." + std::to_string(l) + ".";
    for (const char* ln : {"norm1", "norm2"}) {
      s[layer + ln + ".weight"] = {d};
      s[layer + ln + ".bias"] = {d};
    }
    s[layer + "ff.fc1.weight"] = {di, d};
    s[layer + "ff.fc1.bias"] = {di};
    s[layer + "ff.fc2.weight"] = {d, di};
    s[layer + "ff.fc2.bias"] = {d};
  }
  return s;
}

// The reference model's parameter count, in closed form.
int64_t reference_count(const ModelConfig& cfg) {
  const int64_t V = cfg.vocab_size, d = cfg.d_model, Hr = cfg.n_head * cfg.chunk_rank;
  const int64_t di = cfg.d_inner, bias = cfg.use_bias ? 1 : 0;
  const int64_t attention =
      4 * (d * d + bias * d) + d * d + (d * d + d) + (Hr * d + Hr) + 2 * d + 2 * (2 * d);
  const int64_t layer = attention + 2 * (2 * d) + (di * d + di) + (d * di + d);
  return V * d + V + cfg.n_layer * layer;
}

// Every Parameter member of every module, walked by hand (undefined ones are absent biases).
std::vector<const Parameter*> held_by_modules(const TransformerLSModel& model) {
  std::vector<const Parameter*> held = {&model.in_emb, &model.out_bias};
  auto linear = [&](const Linear& l) {
    held.push_back(&l.weight);
    if (l.bias.defined()) held.push_back(&l.bias);
  };
  auto norm = [&](const LayerNorm& n) {
    held.push_back(&n.weight);
    held.push_back(&n.bias);
  };
  for (const TransformerLayer& layer : model.layers) {
    const LSAttention& a = layer.attn;
    for (const Linear* l : {&a.proj_query, &a.proj_key, &a.proj_val, &a.proj_out, &a.r_net,
                            &a.r_net_chunk, &a.dconv_1})
      linear(*l);
    held.push_back(&a.r_w_bias);
    held.push_back(&a.r_r_bias);
    norm(a.dual_ln_win);
    norm(a.dual_ln_dproj);
    norm(layer.norm1);
    norm(layer.norm2);
    linear(layer.ff.fc1);
    linear(layer.ff.fc2);
  }
  return held;
}

// Where the listed parameters disagree with what the modules hold and with the reference, one
// line each (empty: they agree).
std::vector<std::string> disagreements(const std::vector<Parameter*>& listed,
                                       const std::vector<const Parameter*>& held,
                                       const ModelConfig& cfg) {
  std::vector<std::string> out;
  std::map<const Parameter*, int> times;
  std::map<std::string, int> names;
  int64_t count = 0;
  for (const Parameter* p : listed) {
    ++times[p];
    ++names[p->name];
    int64_t n = 1;
    for (int64_t s : p->full_shape) n *= s;
    count += n;
    if (p->value.numel() != n || p->grad.numel() != n)
      out.push_back(p->name + ": value or gradient does not hold the whole tensor");
  }
  for (const Parameter* p : held)
    if (times[p] != 1)
      out.push_back(p->name + ": held by its module, listed " + std::to_string(times[p]) +
                    " times");
  for (const auto& [p, n] : times)
    if (std::find(held.begin(), held.end(), p) == held.end())
      out.push_back(p->name + ": listed but held by no module");
  const Shapes reference = reference_state_dict(cfg);
  for (const auto& [name, n] : names) {
    if (n != 1) out.push_back(name + ": name listed " + std::to_string(n) + " times");
    if (!reference.count(name)) out.push_back(name + ": not in the reference's state_dict");
  }
  for (const auto& [name, shape] : reference) {
    const auto it = std::find_if(listed.begin(), listed.end(),
                                 [&](const Parameter* p) { return p->name == name; });
    if (it == listed.end())
      out.push_back(name + ": in the reference's state_dict, not listed");
    else if ((*it)->full_shape != shape)
      out.push_back(name + ": shape differs from the reference's");
  }
  if (count != reference_count(cfg))
    out.push_back("count " + std::to_string(count) + ", the reference has " +
                  std::to_string(reference_count(cfg)));
  return out;
}

std::string joined(const std::vector<std::string>& lines) {
  std::string s;
  for (const std::string& l : lines) s += l + "\n";
  return s;
}

class ParameterListOfModel : public ::testing::TestWithParam<bool> {};

TEST_P(ParameterListOfModel, ListsEveryTensorOnceUnderTheReferenceName) {
  const ModelConfig cfg = config(GetParam());
  auto ops = make_cpu_ops();
  TransformerLSModel model(*ops, cfg, DType::f64);
  const std::vector<Parameter*> listed = model.parameters();
  EXPECT_EQ(disagreements(listed, held_by_modules(model), cfg), std::vector<std::string>())
      << joined(disagreements(listed, held_by_modules(model), cfg));
  EXPECT_EQ(model.parameter_count(), reference_count(cfg));
  size_t per_layer = 0;
  for (const TransformerLayer& layer : model.layers) per_layer += layer.parameters().size();
  EXPECT_EQ(listed.size(), 2 + per_layer);
}

TEST_P(ParameterListOfModel, CatchesAPlantedOmissionAndADuplicate) {
  const ModelConfig cfg = config(GetParam());
  auto ops = make_cpu_ops();
  TransformerLSModel model(*ops, cfg, DType::f64);
  const std::vector<const Parameter*> held = held_by_modules(model);

  // A module that forgot to register its proj_val weight.
  std::vector<Parameter*> omitted = model.parameters();
  omitted.erase(std::find(omitted.begin(), omitted.end(), &model.layers[1].attn.proj_val.weight));
  const std::string missing = joined(disagreements(omitted, held, cfg));
  EXPECT_NE(missing.find("layers.1.attn.proj_val.weight: held by its module, listed 0 times"),
            std::string::npos)
      << missing;
  EXPECT_NE(missing.find("layers.1.attn.proj_val.weight: in the reference's state_dict, not "
                         "listed"),
            std::string::npos)
      << missing;

  // One registered twice.
  std::vector<Parameter*> twice = model.parameters();
  twice.push_back(&model.layers[0].norm2.bias);
  const std::string duplicate = joined(disagreements(twice, held, cfg));
  EXPECT_NE(duplicate.find("layers.0.norm2.bias: held by its module, listed 2 times"),
            std::string::npos)
      << duplicate;
}

INSTANTIATE_TEST_SUITE_P(WithAndWithoutBias, ParameterListOfModel, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "use_bias" : "no_bias"; });

// The list's order is what the optimizer's flat buffers and the gradient norm's sum follow:
// every linear layer's weight and bias, then the per-head vectors, then the LayerNorms.
TEST(ParameterList, KeepsTheOrderTheOptimizerFollows) {
  ModelConfig cfg = config(true);
  cfg.n_layer = 1;
  auto ops = make_cpu_ops();
  TransformerLSModel model(*ops, cfg, DType::f64);
  std::vector<std::string> names;
  for (const Parameter* p : model.parameters()) names.push_back(p->name);
  std::vector<std::string> expected = {"in_emb.weight", "out_emb.bias"};
  for (const char* l : {"attn.proj_query", "attn.proj_key", "attn.proj_val", "attn.proj_out"}) {
    expected.push_back(std::string("layers.0.") + l + ".weight");
    expected.push_back(std::string("layers.0.") + l + ".bias");
  }
  for (const char* n :
       {"attn.r_net.weight", "attn.r_net_chunk.weight", "attn.r_net_chunk.bias",
        "attn.dconv_1.weight", "attn.dconv_1.bias", "ff.fc1.weight", "ff.fc1.bias", "ff.fc2.weight",
        "ff.fc2.bias", "attn.r_w_bias", "attn.r_r_bias", "attn.dual_ln_win.weight",
        "attn.dual_ln_win.bias", "attn.dual_ln_dproj.weight", "attn.dual_ln_dproj.bias",
        "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias"})
    expected.push_back(std::string("layers.0.") + n);
  EXPECT_EQ(names, expected);
}

TEST(ParameterList, RefusesANameOrATensorDeclaredTwice) {
  auto ops = make_cpu_ops();
  ParameterList list;
  Parameter a, b;
  list.allocate(*ops, a, ParameterGroup::linear, "x.weight", {2, 3}, {}, DType::f64);
  EXPECT_THROW(list.allocate(*ops, b, ParameterGroup::linear, "x.weight", {2}, {}, DType::f64),
               Error);
  EXPECT_THROW(list.allocate(*ops, a, ParameterGroup::linear, "y.weight", {2}, {}, DType::f64),
               Error);
  EXPECT_EQ(list.parameters(), std::vector<Parameter*>{&a});
  EXPECT_EQ(a.value.shape(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a.full_shape, (std::vector<int64_t>{2, 3}));
}

}  // namespace
}  // namespace tls
