// sld serve's one extension to ComfyUI's web app (comfyui-frontend-package 1.27).
//
// The app assumes that ComfyUI's core model loaders all exist: its model-to-loader table names
// VAELoader, LoraLoader, UNETLoader, ... and every widget named ckpt_name, lora_name or vae_name looks
// the table up, which throws when a loader is not among the server's node definitions. sld serve
// has only some of them, so once the definitions are registered we let the app fill the table and
// drop the entries whose loader this server does not have (the table is not otherwise reachable).
const { app } = window.comfyAPI.app;

app.registerExtension({
  name: "comfyui-sld.serve",
  async setup() {
    const pinia = document.getElementById("vue-app")?.__vue_app__?.config.globalProperties.$pinia;
    const table = pinia?._s.get("modelToNode");
    if (!table) {
      console.warn("sld serve: the web app's model-to-loader table was not found; checkpoint widgets may fail");
      return;
    }
    table.registerDefaults();
    for (const [modelType, loaders] of Object.entries(table.modelToNodeMap)) {
      table.modelToNodeMap[modelType] = loaders.filter((loader) => loader.nodeDef);
    }
  },
});
