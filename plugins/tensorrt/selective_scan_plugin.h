// TensorRT IPluginV3 wrapper of the partool selective-scan kernel (name "SelectiveScan", version "1",
// namespace "partool"). Inputs, attributes and shapes follow scan_plugin_logic.h; this file only adapts them
// to TensorRT's interfaces. Written against the TensorRT 10.3 plugin API (JetPack 6) and compiled against the
// newest headers as well; nothing newer than 10.3 is used.
#pragma once

#include <string>
#include <vector>

#include "NvInferRuntime.h"
#include "scan_plugin_logic.h"

namespace partool
{
namespace trt
{

//! Forward TensorRT's logger finder (from setLoggerFinder) to the plugin's log messages.
void setPluginLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept;

class SelectiveScanPlugin : public nvinfer1::IPluginV3,
                            public nvinfer1::IPluginV3OneCore,
                            public nvinfer1::IPluginV3OneBuild,
                            public nvinfer1::IPluginV3OneRuntime
{
public:
    explicit SelectiveScanPlugin(scanplugin::Attributes const& attrs) noexcept;
    SelectiveScanPlugin(SelectiveScanPlugin const&) = default;
    ~SelectiveScanPlugin() override = default;

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

    // IPluginV3OneBuild
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
        nvinfer1::DimsExprs const* shapeInputs, int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs,
        int32_t nbOutputs, nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t getNbOutputs() const noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;
    int32_t getNbTactics() noexcept override;
    int32_t getValidTactics(int32_t* tactics, int32_t nbTactics) noexcept override;
    char const* getTimingCacheID() noexcept override;

    // IPluginV3OneRuntime
    int32_t setTactic(int32_t tactic) noexcept override;
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::PluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

private:
    //! Resolve (and remember) the input layout for nbInputs; logs and returns false when it does not fit.
    bool resolve(int32_t nbInputs) noexcept;
    //! Resolve the layout from has_D/has_z/has_delta_bias alone (all three known, as in a serialized engine).
    bool resolveFromAttributes() noexcept;

    scanplugin::Attributes mAttrs;
    scanplugin::InputLayout mLayout;
    bool mLayoutResolved{false};
    int32_t mTactic{0}; //!< a partool_scan_cuda_variant_t (scanplugin::kTactics), 0: the library's heuristic
    std::string mTimingCacheId;
    std::vector<nvinfer1::PluginField> mSerialFields;
    nvinfer1::PluginFieldCollection mSerialCollection{0, nullptr};
};

class SelectiveScanPluginCreator : public nvinfer1::IPluginCreatorV3One
{
public:
    SelectiveScanPluginCreator() noexcept;
    ~SelectiveScanPluginCreator() override = default;

    nvinfer1::IPluginV3* createPlugin(char const* name, nvinfer1::PluginFieldCollection const* fc,
        nvinfer1::TensorRTPhase phase) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

private:
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mCollection{0, nullptr};
};

} // namespace trt
} // namespace partool
