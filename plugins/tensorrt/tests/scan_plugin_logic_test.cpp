// Checks of scan_plugin_logic.h (no TensorRT needed); built and run by tests/test_trt_plugin_build.py.
// Prints one line per failed check and exits with the number of failures.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

#include "scan_plugin_logic.h"

using namespace partool::scanplugin;

namespace
{
int gFailures = 0;

void check(bool ok, char const* what, int line)
{
    if (!ok)
    {
        std::printf("FAIL line %d: %s\n", line, what);
        ++gFailures;
    }
}
#define CHECK(cond) check((cond), #cond, __LINE__)

struct TDims
{
    int32_t nbDims;
    int64_t d[8];
};

TDims dims(std::initializer_list<int64_t> v)
{
    TDims t{static_cast<int32_t>(v.size()), {}};
    int32_t i = 0;
    for (int64_t x : v)
    {
        t.d[i++] = x;
    }
    return t;
}

bool contains(std::string const& s, char const* part)
{
    return s.find(part) != std::string::npos;
}

void testLayout()
{
    Attributes none;
    InputLayout l;
    std::string err;
    // Prefix rule when no has_* attribute is given.
    CHECK(resolveLayout(none, 5, &l, &err) && !l.has(kD) && !l.has(kZ) && !l.has(kDeltaBias));
    CHECK(resolveLayout(none, 6, &l, &err) && l.position[kD] == 5 && !l.has(kZ) && !l.has(kDeltaBias));
    CHECK(resolveLayout(none, 7, &l, &err) && l.position[kD] == 5 && l.position[kZ] == 6 && !l.has(kDeltaBias));
    CHECK(resolveLayout(none, 8, &l, &err) && l.position[kDeltaBias] == 7 && l.slotAt[7] == kDeltaBias);
    CHECK(!resolveLayout(none, 4, &l, &err) && contains(err, "4 inputs"));
    CHECK(!resolveLayout(none, 9, &l, &err));
    // Explicit presence: z only -> packed right after C; the missing flags count as 0.
    Attributes zOnly;
    zOnly.hasZ = 1;
    CHECK(resolveLayout(zOnly, 6, &l, &err) && !l.has(kD) && l.position[kZ] == 5 && l.slotAt[5] == kZ
        && !l.has(kDeltaBias));
    CHECK(!resolveLayout(zOnly, 7, &l, &err) && contains(err, "7 inputs") && contains(err, "say 6"));
    Attributes dAndBias;
    dAndBias.hasD = 1;
    dAndBias.hasZ = 0;
    dAndBias.hasDeltaBias = 1;
    CHECK(resolveLayout(dAndBias, 7, &l, &err) && l.position[kD] == 5 && !l.has(kZ) && l.position[kDeltaBias] == 6);
    Attributes allAbsent;
    allAbsent.hasD = 0;
    CHECK(resolveLayout(allAbsent, 5, &l, &err) && !l.has(kD));
    CHECK(!resolveLayout(allAbsent, 6, &l, &err));
}

void testFields()
{
    Attributes a;
    int32_t const one = 1;
    int32_t const two = 2;
    int64_t const one64 = 1;
    CHECK(applyField(a, "delta_softplus", FieldKind::kInt32, &one, 1).empty() && a.deltaSoftplus == 1);
    CHECK(applyField(a, "reverse", FieldKind::kInt64, &one64, 1).empty() && a.reverse == 1);
    CHECK(applyField(a, "has_delta_bias", FieldKind::kInt32, &one, 1).empty() && a.hasDeltaBias == 1);
    CHECK(a.hasD == -1 && a.hasZ == -1);
    CHECK(contains(applyField(a, "reverse", FieldKind::kInt32, &two, 1), "0 or 1"));
    int32_t const pair[2] = {0, 1};
    CHECK(!applyField(a, "has_D", FieldKind::kInt32, pair, 2).empty());
    CHECK(!applyField(a, "has_z", FieldKind::kChar, "1", 1).empty());
    CHECK(!applyField(a, "has_z", FieldKind::kInt32, nullptr, 1).empty());
    // plugin_namespace / plugin_version may come with or without the terminating NUL.
    CHECK(applyField(a, "plugin_namespace", FieldKind::kChar, "partool", 7).empty());
    CHECK(applyField(a, "plugin_namespace", FieldKind::kChar, "partool", 8).empty());
    CHECK(applyField(a, "plugin_version", FieldKind::kChar, "1", 1).empty());
    CHECK(contains(applyField(a, "plugin_version", FieldKind::kChar, "2", 1), "'2'"));
    CHECK(!applyField(a, "plugin_namespace", FieldKind::kChar, "part", 4).empty());
    CHECK(contains(applyField(a, "delta_softpuls", FieldKind::kInt32, &one, 1), "unknown field"));
    CHECK(!applyField(a, nullptr, FieldKind::kInt32, &one, 1).empty());
}

void testShapes()
{
    Attributes none;
    InputLayout l8;
    InputLayout l5;
    std::string err;
    resolveLayout(none, 8, &l8, &err);
    resolveLayout(none, 5, &l5, &err);
    ScanShape s;
    // b=2, d=8, n=4, l=5, B/C 3-D (one group).
    TDims in[8] = {dims({2, 8, 5}), dims({2, 8, 5}), dims({8, 4}), dims({2, 4, 5}), dims({2, 4, 5}), dims({8}),
        dims({2, 8, 5}), dims({8})};
    CHECK(inferShape(l8, in, &s, &err) && s.batch == 2 && s.dim == 8 && s.dstate == 4 && s.length == 5
        && s.groups == 1);
    // Grouped B/C: (b, g, n, l) with g dividing d.
    TDims grouped[5] = {in[0], in[1], in[2], dims({2, 2, 4, 5}), dims({2, 2, 4, 5})};
    CHECK(inferShape(l5, grouped, &s, &err) && s.groups == 2 && s.dstate == 4);
    TDims badGroups[5] = {in[0], in[1], in[2], dims({2, 3, 4, 5}), dims({2, 3, 4, 5})};
    CHECK(!inferShape(l5, badGroups, &s, &err) && contains(err, "divides"));
    TDims cMismatch[5] = {in[0], in[1], in[2], dims({2, 2, 4, 5}), dims({2, 4, 5})};
    CHECK(!inferShape(l5, cMismatch, &s, &err) && contains(err, "input C"));
    TDims badDelta[5] = {in[0], dims({2, 8, 6}), in[2], in[3], in[4]};
    CHECK(!inferShape(l5, badDelta, &s, &err) && contains(err, "input delta") && contains(err, "(2, 8, 6)"));
    TDims badA[5] = {in[0], in[1], dims({7, 4}), in[3], in[4]};
    CHECK(!inferShape(l5, badA, &s, &err) && contains(err, "input A"));
    TDims bigState[5] = {in[0], in[1], dims({8, 17}), dims({2, 17, 5}), dims({2, 17, 5})};
    CHECK(!inferShape(l5, bigState, &s, &err) && contains(err, "dstate between 1 and 16"));
    TDims bStateMismatch[5] = {in[0], in[1], in[2], dims({2, 3, 5}), dims({2, 3, 5})};
    CHECK(!inferShape(l5, bStateMismatch, &s, &err) && contains(err, "input B"));
    TDims u2d[5] = {dims({8, 5}), in[1], in[2], in[3], in[4]};
    CHECK(!inferShape(l5, u2d, &s, &err) && contains(err, "input u"));
    TDims badD[8] = {in[0], in[1], in[2], in[3], in[4], dims({7}), in[6], in[7]};
    CHECK(!inferShape(l8, badD, &s, &err) && contains(err, "input D"));
    TDims badZ[8] = {in[0], in[1], in[2], in[3], in[4], in[5], dims({2, 8, 4}), in[7]};
    CHECK(!inferShape(l8, badZ, &s, &err) && contains(err, "input z"));
    TDims badBias[8] = {in[0], in[1], in[2], in[3], in[4], in[5], in[6], dims({8, 1})};
    CHECK(!inferShape(l8, badBias, &s, &err) && contains(err, "input delta_bias"));
    // Build-time wildcards: batch and length unknown, the rest still checked.
    TDims wild[5] = {dims({-1, 8, -1}), dims({-1, 8, -1}), in[2], dims({-1, 4, -1}), dims({-1, 4, -1})};
    CHECK(inferShape(l5, wild, &s, &err) && s.batch == -1 && s.length == -1 && s.dim == 8 && s.dstate == 4);
    TDims wildMixed[5] = {dims({-1, 8, -1}), dims({2, 8, 5}), in[2], dims({2, -1, 5}), dims({-1, 4, -1})};
    CHECK(inferShape(l5, wildMixed, &s, &err) && s.dstate == 4);
    TDims wildBad[5] = {dims({-1, 8, -1}), dims({-1, 6, -1}), in[2], dims({-1, 4, -1}), dims({-1, 4, -1})};
    CHECK(!inferShape(l5, wildBad, &s, &err));
}

void testParams()
{
    Attributes attrs;
    attrs.deltaSoftplus = 1;
    attrs.reverse = 1;
    attrs.hasZ = 1;
    InputLayout l;
    std::string err;
    CHECK(resolveLayout(attrs, 6, &l, &err));
    char buf[6];
    void const* inputs[6] = {&buf[0], &buf[1], &buf[2], &buf[3], &buf[4], &buf[5]};
    char out;
    ScanShape s;
    s.batch = 3;
    s.dim = 16;
    s.dstate = 16;
    s.length = 197;
    s.groups = 2;
    partool_scan_params_t const p = makeParams(s, attrs, l, PARTOOL_DTYPE_F16, inputs, &out);
    CHECK(p.batch == 3 && p.dim == 16 && p.dstate == 16 && p.length == 197 && p.groups == 2);
    CHECK(p.io_dtype == PARTOOL_DTYPE_F16);
    CHECK(p.u == &buf[0] && p.delta == &buf[1] && static_cast<void const*>(p.A) == &buf[2] && p.B == &buf[3]
        && p.C == &buf[4]);
    CHECK(p.z == &buf[5] && p.D == nullptr && p.delta_bias == nullptr && p.last_state == nullptr);
    CHECK(p.out == &out && p.delta_softplus == 1 && p.reverse == 1);
    partool_scan_params_t const q = makeParams(s, Attributes{}, l, PARTOOL_DTYPE_F32, nullptr, nullptr);
    CHECK(q.u == nullptr && q.z == nullptr && q.delta_softplus == 0 && q.reverse == 0 && q.dim == 16);
}

void testTactics()
{
    // Every explicit variant of partool_kernels.h's enum, and nothing else: the heuristic ones (AUTO is tactic 0,
    // CHUNKED and ROWS resolve to one of these) and values past the enum are not tactics.
    CHECK(kNumTactics == 8);
    for (int32_t v = 0; v < PARTOOL_SCAN_CUDA_VARIANT_COUNT + 2; ++v)
    {
        bool const heuristic = v == PARTOOL_SCAN_CUDA_AUTO || v == PARTOOL_SCAN_CUDA_CHUNKED || v == PARTOOL_SCAN_CUDA_ROWS;
        bool advertised = false;
        for (int32_t t : kTactics)
        {
            advertised = advertised || t == v;
        }
        CHECK(advertised == (!heuristic && v < PARTOOL_SCAN_CUDA_VARIANT_COUNT));
        CHECK(validTactic(v) == (advertised || v == 0));
    }
    CHECK(!validTactic(-1));
    Attributes a;
    a.deltaSoftplus = 1;
    Attributes b = a;
    b.reverse = 1;
    CHECK(timingCacheId(a) != timingCacheId(b));
    CHECK(timingCacheId(a) == "partool::SelectiveScan/v1/abi4/softplus1/reverse0/D-1/z-1/bias-1");
}
} // namespace

int main()
{
    testLayout();
    testFields();
    testShapes();
    testParams();
    testTactics();
    std::printf("%d failure(s)\n", gFailures);
    return gFailures;
}
