// placeholder until runtime/dist lands
