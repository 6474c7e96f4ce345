// Coverage is measured for the product's contracts: contracts/test/ holds fixtures that tests deploy
// (a look-alike registry the client must refuse), not code that ships.
module.exports = {
  skipFiles: ["test/"],
};
