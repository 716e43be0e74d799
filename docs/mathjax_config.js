// Inlined before MathJax 3 loads (conf.py: mathjax_config_path).
//
// The Jupyter widgets' HTML manager typesets widget labels through MathJax 2's API,
// MathJax.Hub.Queue(["Typeset", MathJax.Hub, element]), as soon as window.MathJax exists --
// even before MathJax 3 has loaded, and MathJax 3 has no Hub: every widget page then threw
// "Cannot read properties of undefined (reading 'Queue')". This bridge queues those calls
// until MathJax 3 is ready, then maps them onto MathJax 3's typesetPromise.
(() => {
  const config = window.MathJax || {};
  const waiting = [];
  const typeset = (job) => {
    const element = Array.isArray(job) ? job[2] : undefined;
    return window.MathJax.typesetPromise(element ? [element] : undefined);
  };
  config.Hub = { Queue: (job) => { waiting.push(job); } };
  const startup = config.startup || {};
  startup.ready = () => {
    window.MathJax.Hub = { Queue: typeset };
    window.MathJax.startup.defaultReady();
    window.MathJax.startup.promise.then(() => waiting.splice(0).forEach(typeset));
  };
  config.startup = startup;
  window.MathJax = config;
})();
