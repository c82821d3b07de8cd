// Self-registration for libpartool_trt_plugins_static.so, the variant for `trtexec --staticPlugins=` and for
// applications that dlopen the library themselves: when the library is loaded, the creator is registered with
// the process's TensorRT plugin registry under its own namespace ("partool"; TensorRT's PluginRegistrar would
// register it under ""). The registry is looked up at load time with dlsym, so the library loads (and only
// logs) in a process without TensorRT instead of failing on an unresolved symbol. Do not pass this variant to
// loadLibrary / --dynamicPlugins: it has no getCreators, and registering twice makes loadLibrary fail.
#include <dlfcn.h>

#include <cstdio>

#include "selective_scan_plugin.h"

namespace
{

using GetPluginRegistryFn = nvinfer1::IPluginRegistry* (*) ();

class StaticRegistrar
{
public:
    StaticRegistrar() noexcept
    {
        auto const getRegistry = reinterpret_cast<GetPluginRegistryFn>(dlsym(RTLD_DEFAULT, "getPluginRegistry"));
        nvinfer1::IPluginRegistry* registry = getRegistry != nullptr ? getRegistry() : nullptr;
        if (registry == nullptr)
        {
            std::fprintf(stderr,
                "[partool SelectiveScan] no TensorRT plugin registry in this process (libnvinfer not loaded "
                "globally); nothing registered. Use libpartool_trt_plugins.so with loadLibrary instead.\n");
            return;
        }
        if (!registry->registerCreator(mCreator, mCreator.getPluginNamespace()))
        {
            std::fprintf(stderr, "[partool SelectiveScan] registering the plugin creator failed (already registered?)\n");
        }
    }

private:
    partool::trt::SelectiveScanPluginCreator mCreator;
};

StaticRegistrar gStaticRegistrar;

} // namespace
